// Helpers shared by the pages: fetch JSON, build elements, format times. No dependencies.
"use strict";
const SVG_NS = "http://www.w3.org/2000/svg";

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function stateBadge(state) {
  return el("span", { class: "state " + state, "data-state": state }, state);
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  if (value < 1) return (value * 1000).toFixed(1) + " ms";
  if (value < 120) return value.toFixed(2) + " s";
  return (value / 60).toFixed(1) + " min";
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "-";
}
