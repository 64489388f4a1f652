/*
 * The OpenSeadragon viewer of a finished job: the mosaic, the heatmap above it (opacity slider), the mask
 * as a filled layer or as an outline drawn from the job's GeoJSON, a scale bar in micrometres, and the
 * navigator. All three Deep Zoom layers share the mosaic's full-resolution geometry, so they overlay
 * one to one. Tiles and descriptors are fetched with the bearer token (OpenSeadragon's AJAX loading).
 */

import { apiJson, authHeaders, describeError } from "./api.js";
import { $, showMessage } from "./ui.js";

const DEFAULT_PIXEL_SIZE_UM = 0.5;
const MASK_FILL_OPACITY = 0.45;
const SCALEBAR_MAX_PX = 160;
const SVG_NS = "http://www.w3.org/2000/svg";

/** What the page shows now; exposed read-only as `window.rcmseg` for end-to-end tests. */
export const view = {
  viewer: null,
  layers: {},
  pixelSizeUm: DEFAULT_PIXEL_SIZE_UM,
  seq: 0,
  stats: { tilesLoaded: 0, tileFailures: [], layerFailures: [] },
};

export function initLayerControls() {
  $("heatmap-opacity").addEventListener("input", onOpacityInput);
  for (const radio of document.querySelectorAll("input[name=mask-mode]")) {
    radio.addEventListener("change", applyMaskMode);
  }
}

function ensureViewer() {
  if (view.viewer) return view.viewer;
  const viewer = OpenSeadragon({
    element: $("osd"),
    prefixUrl: "vendor/openseadragon/images/",
    // The canvas drawer behaves the same on machines without a GPU and blends layer opacity exactly.
    drawer: "canvas",
    loadTilesWithAjax: true,
    ajaxHeaders: authHeaders(),
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    autoHideControls: false,
    showRotationControl: false,
    gestureSettingsMouse: { clickToZoom: false },
    visibilityRatio: 0.5,
    minZoomImageRatio: 0.8,
    maxZoomPixelRatio: 4,
    timeout: 60000,
  });
  viewer.addHandler("tile-loaded", () => {
    view.stats.tilesLoaded += 1;
  });
  viewer.addHandler("tile-load-failed", (event) => {
    view.stats.tileFailures.push(event.message || "tile failed");
  });
  for (const name of ["animation", "update-viewport", "resize"]) viewer.addHandler(name, redrawOverlays);
  view.viewer = viewer;
  return viewer;
}

function addLayer(url, opacity) {
  return new Promise((resolve, reject) => {
    view.viewer.addTiledImage({
      tileSource: url,
      opacity,
      ajaxHeaders: authHeaders(),
      success: (event) => resolve(event.item),
      error: (event) => reject(new Error(event.message || "could not load " + url)),
    });
  });
}

/** Replace what the viewer shows with the layers of `job` (a finished job with a result). */
export async function showLayers(job) {
  const seq = ++view.seq;
  const viewer = ensureViewer();
  viewer.world.removeAll();
  view.layers = {};
  view.pixelSizeUm = job.params.pixel_size_um || DEFAULT_PIXEL_SIZE_UM;
  loadOutline(job, seq);
  const urls = job.result.layers;
  const opacity = Number($("heatmap-opacity").value);
  try {
    // OpenSeadragon adds the items in this order whatever order their descriptors arrive in.
    const [mosaic, heatmap, mask] = await Promise.all([
      addLayer(urls.mosaic, 1),
      addLayer(urls.heatmap, opacity),
      addLayer(urls.mask, 0),
    ]);
    if (seq !== view.seq) return;
    view.layers = { mosaic, heatmap, mask };
    viewer.viewport.goHome(true);
    applyMaskMode();
    $("legend").hidden = false;
    $("scalebar").hidden = false;
    redrawOverlays();
  } catch (error) {
    view.stats.layerFailures.push(error.message);
    showMessage("The result's image layers could not be loaded: " + describeError(error));
  }
}

export function clearLayers() {
  view.seq += 1;
  view.layers = {};
  if (view.viewer) view.viewer.world.removeAll();
  removeOutline();
  $("legend").hidden = true;
  $("scalebar").hidden = true;
}

export function destroyViewer() {
  clearLayers();
  if (view.viewer) view.viewer.destroy();
  view.viewer = null;
}

function onOpacityInput() {
  const value = Number($("heatmap-opacity").value);
  $("heatmap-opacity-value").textContent = Math.round(100 * value) + "%";
  if (view.layers.heatmap) view.layers.heatmap.setOpacity(value);
}

function applyMaskMode() {
  const mode = document.querySelector("input[name=mask-mode]:checked").value;
  if (view.layers.mask) view.layers.mask.setOpacity(mode === "fill" ? MASK_FILL_OPACITY : 0);
  const svg = $("mask-outline");
  if (svg) svg.style.display = mode === "outline" ? "" : "none";
}

// -- the mask outline: an SVG over the viewer, in image pixels, moved with the viewport -------------

function removeOutline() {
  const svg = $("mask-outline");
  if (svg) svg.remove();
}

function geojsonPath(collection) {
  const parts = [];
  for (const feature of collection.features || []) {
    const geometry = feature.geometry || {};
    const polygons = geometry.type === "MultiPolygon" ? geometry.coordinates
      : geometry.type === "Polygon" ? [geometry.coordinates] : [];
    for (const rings of polygons) {
      for (const ring of rings) parts.push("M" + ring.map((p) => p[0] + " " + p[1]).join("L") + "Z");
    }
  }
  return parts.join("");
}

async function loadOutline(job, seq) {
  removeOutline();
  let collection;
  try {
    collection = await apiJson(job.result.geojson);
  } catch (error) {
    showMessage("The mask outline could not be loaded: " + describeError(error));
    return;
  }
  if (seq !== view.seq || !view.viewer) return;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.id = "mask-outline";
  svg.setAttribute("class", "mask-outline");
  svg.setAttribute("aria-hidden", "true");
  const group = document.createElementNS(SVG_NS, "g");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", geojsonPath(collection));
  path.setAttribute("fill-rule", "evenodd");
  path.setAttribute("vector-effect", "non-scaling-stroke");
  group.append(path);
  svg.append(group);
  view.viewer.canvas.append(svg);
  applyMaskMode();
  redrawOverlays();
}

/** Where image pixel (0, 0) lands in the viewer, and screen pixels per image pixel (no rotation). */
function imageTransform() {
  const item = view.layers.mosaic;
  if (!item) return null;
  const origin = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
  const far = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
  return { x: origin.x, y: origin.y, scale: (far.x - origin.x) / 1000 };
}

function redrawOverlays() {
  const t = imageTransform();
  if (!t) return;
  const svg = $("mask-outline");
  if (svg) svg.firstChild.setAttribute("transform", "translate(" + t.x + " " + t.y + ") scale(" + t.scale + ")");
  drawScaleBar(t.scale);
}

// -- the scale bar ---------------------------------------------------------------------------------

/** The longest 1, 2 or 5 x 10^k micrometres not over `maxUm`. */
function niceLength(maxUm) {
  const power = Math.pow(10, Math.floor(Math.log10(maxUm)));
  for (const m of [5, 2, 1]) if (m * power <= maxUm) return m * power;
  return power;
}

function drawScaleBar(screenPxPerImagePx) {
  if (!(screenPxPerImagePx > 0)) return;
  const umPerScreenPx = view.pixelSizeUm / screenPxPerImagePx;
  const lengthUm = niceLength(SCALEBAR_MAX_PX * umPerScreenPx);
  const label = lengthUm >= 1000 ? lengthUm / 1000 + " mm" : +lengthUm.toPrecision(6) + " µm";
  $("scalebar-bar").style.width = lengthUm / umPerScreenPx + "px";
  $("scalebar-label").textContent = label;
}
