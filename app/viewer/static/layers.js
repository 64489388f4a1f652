/*
 * The OpenSeadragon viewer of a finished job: the mosaic, the heatmap above it (opacity slider), the mask
 * as a filled layer or as an outline drawn from the job's GeoJSON, a scale bar in micrometres, and the
 * navigator. Tiles and descriptors are fetched with the bearer token (OpenSeadragon's AJAX loading).
 *
 * The mosaic is its own pyramid, shown as soon as it is ready after the upload. A result's heatmap and mask
 * are the heat at processing resolution, coloured per tile by the API: OpenSeadragon draws every layer by
 * its width in viewport units, so the heat is drawn `width x scale / mosaic width` wide over the mosaic.
 * The mask threshold is live: the slider swaps the mask layer for one at the new threshold (its tiles
 * come from the URL's `?threshold=`) and reads the area from the heat histogram, with no request per move.
 * Results written before the heat pyramid have three full-resolution layers and no live threshold.
 */

import { apiJson, authHeaders, describeError } from "./api.js";
import { $, showMessage } from "./ui.js";

const DEFAULT_PIXEL_SIZE_UM = 0.5;
const MASK_FILL_OPACITY = 0.45;
const SCALEBAR_MAX_PX = 160;
const SVG_NS = "http://www.w3.org/2000/svg";
const MASK_SWAP_TIMEOUT_MS = 5000;
const MOSAIC_POLL_MS = 1000;
const MOSAIC_POLL_MAX = 600;

/** What the page shows now; exposed read-only as `window.rcmseg` for end-to-end tests. */
export const view = {
  viewer: null,
  layers: {},
  pixelSizeUm: DEFAULT_PIXEL_SIZE_UM,
  seq: 0,
  threshold: null,
  stats: { tilesLoaded: 0, tileFailures: [], layerFailures: [], maskThreshold: null, previewed: null },
};

export function initLayerControls() {
  $("heatmap-opacity").addEventListener("input", onOpacityInput);
  for (const radio of document.querySelectorAll("input[name=mask-mode]")) {
    radio.addEventListener("change", applyMaskMode);
  }
  $("threshold-slider").addEventListener("input", onThresholdInput);
  $("threshold-slider").addEventListener("change", onThresholdSettled);
  $("threshold-reset").addEventListener("click", resetThreshold);
  document.addEventListener("rcmseg:mosaic-uploaded", (event) => previewMosaic(event.detail));
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

/** Add a layer `width` viewport units wide (the mosaic is 1), above the others or at `index`. */
function addLayer(url, opacity, { width = 1, index, preload = false } = {}) {
  return new Promise((resolve, reject) => {
    const options = { tileSource: url, opacity, x: 0, y: 0, width, preload, ajaxHeaders: authHeaders() };
    if (index !== undefined) options.index = index;
    view.viewer.addTiledImage({
      ...options,
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
  // The input's pixel size as the job used it (requested, read from the file, or assumed: summary.input).
  view.pixelSizeUm = (job.result.summary.input || {}).pixel_size_um || job.params.pixel_size_um ||
    DEFAULT_PIXEL_SIZE_UM;
  const live = setUpThreshold(job, seq);
  removeOutline();
  loadOutline(job.result.geojson, seq);
  const urls = job.result.layers;
  const opacity = Number($("heatmap-opacity").value);
  const width = live ? live.width : 1;
  try {
    // OpenSeadragon adds the items in this order whatever order their descriptors arrive in.
    const [mosaic, heatmap, mask] = await Promise.all([
      addLayer(urls.mosaic, 1),
      addLayer(urls.heatmap, opacity, { width }),
      addLayer(live ? maskUrl(live.jobThreshold) : urls.mask, 0, { width }),
    ]);
    if (seq !== view.seq) return;
    view.layers = { mosaic, heatmap, mask };
    view.stats.maskThreshold = live ? live.jobThreshold : null;
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
  view.threshold = null;
  $("threshold-controls").hidden = true;
  $("download-regions-at").hidden = true;
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

// -- the mosaic before any result: its own pyramid, once the prepare job has built it ---------------

/** Show a just-uploaded mosaic as soon as its pyramid is ready, unless a result is opened meanwhile. */
async function previewMosaic(mosaic) {
  if (!mosaic || !mosaic.dzi) return;
  const seq = ++view.seq;
  let record = mosaic;
  for (let i = 0; record.pyramid !== "ready" && i < MOSAIC_POLL_MAX; i++) {
    await new Promise((resolve) => setTimeout(resolve, MOSAIC_POLL_MS));
    if (seq !== view.seq) return;
    try {
      record = await apiJson("v1/mosaics/" + mosaic.id);
    } catch (error) {
      return; // deleted, or signed out: nothing to preview
    }
  }
  if (seq !== view.seq || record.pyramid !== "ready" || typeof OpenSeadragon === "undefined") return;
  const viewer = ensureViewer();
  viewer.world.removeAll();
  removeOutline();
  try {
    const item = await addLayer(record.dzi.replace(/^\//, ""), 1);
    if (seq !== view.seq) return;
    view.layers = { mosaic: item };
    view.stats.previewed = mosaic.id;
    $("stage-empty").hidden = true;
    viewer.viewport.goHome(true);
    $("scalebar").hidden = true; // the pixel size is known once a job has read the file
    redrawOverlays();
  } catch (error) {
    view.stats.layerFailures.push(error.message);
  }
}

// -- the live threshold: the mask at any threshold, the area from the heat histogram ----------------

/** The live threshold's state for a result that stores its heat as a pyramid, else null (controls hidden). */
function setUpThreshold(job, seq) {
  const result = job.result;
  const summary = result.summary || {};
  const layers = summary.layers;
  const live = layers && layers.heat && result.histogram && result.regions ? {
    jobThreshold: Number(summary.threshold),
    value: Number(summary.threshold),
    width: (layers.heat.width * layers.heat.scale) / layers.mosaic.width,
    maskBase: result.layers.mask,
    regions: result.regions,
    suffix: null, // suffix[k]: pixels with heat >= k / bins
    bins: 0,
    coveredPx: 0,
    mm2PerPx: 0,
    busy: false,
    wanted: null,
  } : null;
  view.threshold = live;
  $("threshold-controls").hidden = !live;
  $("download-regions-at").hidden = !live;
  if (!live) return null;
  const umPerPx = (summary.processing || {}).pixel_size_um || 0;
  live.mm2PerPx = Math.pow(umPerPx * 1e-3, 2);
  live.coveredPx = live.mm2PerPx > 0 ? summary.scanned_area_mm2 / live.mm2PerPx : 0;
  $("threshold-slider").value = String(live.jobThreshold);
  showThresholdValue(live.jobThreshold);
  $("threshold-area").textContent = "";
  apiJson(result.histogram).then((histogram) => {
    if (seq !== view.seq || view.threshold !== live) return;
    const counts = histogram.counts || [];
    const suffix = new Float64Array(counts.length + 1);
    for (let k = counts.length - 1; k >= 0; k--) suffix[k] = suffix[k + 1] + counts[k];
    live.suffix = suffix;
    live.bins = counts.length;
    showArea(live.value);
  }).catch((error) => showMessage("The heat histogram could not be loaded: " + describeError(error)));
  return live;
}

function maskUrl(threshold) {
  return view.threshold.maskBase + "?threshold=" + threshold;
}

function regionsUrl(threshold) {
  return view.threshold.regions + "?threshold=" + threshold;
}

/** The threshold the regions download should use (the slider's), or null for results without one. */
export function currentThreshold() {
  return view.threshold ? view.threshold.value : null;
}

export function regionsAtCurrentThreshold() {
  return view.threshold ? regionsUrl(view.threshold.value) : null;
}

function showThresholdValue(value) {
  $("threshold-value").textContent = value.toFixed(2);
}

/** Pixels with heat >= threshold, from the histogram (exact on its grid of 1/bins). */
function pixelsAtOrAbove(live, threshold) {
  const k = Math.min(live.bins, Math.max(0, Math.ceil(threshold * live.bins - 1e-6)));
  return live.suffix[k];
}

function showArea(threshold) {
  const live = view.threshold;
  if (!live || !live.suffix) return;
  const pixels = pixelsAtOrAbove(live, threshold);
  const fraction = live.coveredPx > 0 ? pixels / live.coveredPx : 0;
  const mm2 = pixels * live.mm2PerPx;
  $("threshold-area").textContent = "Aspecific area at " + threshold.toFixed(2) + ": " +
    (100 * fraction).toFixed(2) + "% (" + mm2.toFixed(3) + " mm²)";
}

function onThresholdInput() {
  const live = view.threshold;
  if (!live) return;
  const value = Number($("threshold-slider").value);
  live.value = value;
  showThresholdValue(value);
  showArea(value);
  const fill = document.querySelector("input[name=mask-mode][value=fill]");
  if (!fill.checked) {
    fill.checked = true; // the outline follows when the slider settles; the filled mask follows at once
    applyMaskMode();
  }
  live.wanted = value;
  if (!live.busy) swapMask(live);
}

function onThresholdSettled() {
  const live = view.threshold;
  if (live) loadOutline(regionsUrl(live.value), view.seq, live.value);
}

function resetThreshold() {
  const live = view.threshold;
  if (!live) return;
  $("threshold-slider").value = String(live.jobThreshold);
  onThresholdInput();
  onThresholdSettled();
}

/** Replace the mask layer by one at `live.wanted`; the old one stays until the new one has its tiles. */
async function swapMask(live) {
  const threshold = live.wanted;
  const old = view.layers.mask;
  if (!old || view.threshold !== live) return;
  live.busy = true;
  const seq = view.seq;
  try {
    const world = view.viewer.world;
    const item = await addLayer(maskUrl(threshold), 0, {
      width: live.width,
      index: world.getIndexOfItem(old) + 1,
      preload: true,
    });
    if (seq !== view.seq) {
      view.viewer.world.removeItem(item);
      return;
    }
    await fullyLoaded(item);
    if (seq !== view.seq) return;
    view.layers.mask = item;
    view.stats.maskThreshold = threshold;
    applyMaskMode();
    if (world.getIndexOfItem(old) !== -1) world.removeItem(old);
  } catch (error) {
    view.stats.layerFailures.push(error.message);
  } finally {
    live.busy = false;
    if (seq === view.seq && live.wanted !== threshold) swapMask(live);
  }
}

function fullyLoaded(item) {
  if (item.getFullyLoaded()) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      item.removeHandler("fully-loaded-change", onChange);
      clearTimeout(timer);
      resolve();
    };
    const onChange = (event) => {
      if (event.fullyLoaded) done();
    };
    const timer = setTimeout(done, MASK_SWAP_TIMEOUT_MS);
    item.addHandler("fully-loaded-change", onChange);
  });
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

/** Draw the regions of `url` as the outline; `threshold` is the one they were traced at, if not the job's. */
async function loadOutline(url, seq, threshold) {
  let collection;
  try {
    collection = await apiJson(url);
  } catch (error) {
    showMessage("The mask outline could not be loaded: " + describeError(error));
    return;
  }
  if (seq !== view.seq || !view.viewer) return;
  if (threshold !== undefined && view.threshold && view.threshold.value !== threshold) return; // moved on
  removeOutline();
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
