/*
 * The side panel of an open job: its summary (the engine's summary.json, readable) and downloads.
 * Downloads are fetched with the token and saved through a Blob URL: a plain link cannot send the header.
 */

import { api, describeError } from "./api.js";
import { modelByName } from "./jobform.js";
import { jobName } from "./joblist.js";
import { currentThreshold, regionsAtCurrentThreshold } from "./layers.js";
import { methodRows, pixelSizeText, showNotice } from "./provenance.js";
import { $, formatDuration, formatNumber, formatTime, showMessage } from "./ui.js";

const DOWNLOADS = {
  geojson: { url: (result) => result.geojson, suffix: "regions.geojson" },
  heatmap_tiff: { url: (result) => result.heatmap_tiff, suffix: "heatmap.tif" },
  summary: { url: (result) => result.geojson.replace(/[^/]+$/, "summary.json"), suffix: "summary.json" },
  // The regions at the live threshold's value, traced by the API from heatmap.tif (and kept there).
  regions_at: {
    url: () => regionsAtCurrentThreshold(),
    suffix: () => "regions-at-" + currentThreshold().toFixed(2) + ".geojson",
  },
};

let shown = null;

export function initResultPanel() {
  for (const button of document.querySelectorAll("[data-download]")) {
    button.addEventListener("click", () => download(button.dataset.download));
  }
}

export function showResult(job) {
  shown = job;
  $("panel-job").textContent = jobName(job) + " · job " + job.id.slice(0, 8);
  showNotice(job, modelByName(job.model));
  const list = $("summary-list");
  list.replaceChildren();
  for (const [term, value] of summaryRows(job)) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
  $("panel").hidden = false;
  $("workspace").classList.add("has-result");
}

export function hideResult() {
  shown = null;
  $("panel").hidden = true;
  $("workspace").classList.remove("has-result");
}

function summaryRows(job) {
  const s = job.result.summary;
  const input = s.input || {};
  const windows = s.windows || {};
  const timings = s.timings_s || {};
  const cardName = s.model ? s.model.name : "—";
  return [
    ["Aspecific area", (100 * s.aspecific_area_fraction).toFixed(2) + "% (" + formatNumber(s.aspecific_area_mm2, 3) + " mm²)"],
    ["Max window probability", formatNumber(s.max_window_probability, 3)],
    ["Regions", String(s.regions)],
    ["Model", cardName + (cardName === job.model ? "" : " (" + job.model + ")")],
    ...methodRows(s),
    ["Pixel size", pixelSizeText(s, job.params.pixel_size_um)],
    ["Precision / device", s.precision + " / " + s.device],
    ["Mosaic", jobName(job) + ", " + input.width + " × " + input.height + " px, " + input.bit_depth + "-bit"],
    ["Windows", (windows.computed ?? "—") + " computed, " + (windows.skipped ?? 0) + " skipped"],
    ["Compute time", timings.total !== undefined ? formatDuration(timings.total) + " (" + timings.total.toFixed(1) + " s)" : "—"],
    ["Submitted", formatTime(job.created_at)],
    ["Finished", formatTime(job.finished_at)],
  ];
}

function fileName(job, suffix) {
  const base = jobName(job).replace(/\.[^.]+$/, "").replace(/[^A-Za-z0-9_.-]+/g, "_");
  return base + "-" + job.id.slice(0, 8) + "-" + suffix;
}

async function download(kind) {
  const job = shown;
  const spec = DOWNLOADS[kind];
  if (!job || !spec) return;
  try {
    const blob = await (await api(spec.url(job.result))).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = fileName(job, typeof spec.suffix === "function" ? spec.suffix() : spec.suffix);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    showMessage("Download failed: " + describeError(error));
  }
}
