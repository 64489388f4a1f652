/*
 * How to read a result: what the model is fit for, what the summary warns about (few windows, an assumed
 * pixel size), and each method value that ran with where it came from (the model's defaults or the request).
 * All of it is read from the job's summary.json; results written before the summary said so fall back to
 * the model's entry in GET /v1/models, then to plain values without a source.
 */

import { $ } from "./ui.js";

const SOURCES = { card: "model's default", request: "requested" };
const PIXEL_SIZE_SOURCES = {
  request: "as requested",
  file: "read from the file",
  assumed: "assumed: the file records none",
};
const NO_INTENDED_USE = "not stated on the model's card. Read this result as research output, not as a diagnosis.";
const INTENDED_USE_NOTE = /^model's intended use:/i;

export function isPlainAveraging(sigma) {
  return sigma === null || sigma === undefined || sigma === "none";
}

export function describeSigma(sigma) {
  return isPlainAveraging(sigma) ? "none (plain averaging)" : +Number(sigma).toFixed(2) + " px";
}

/** A note as a sentence: capitalised, in µm. */
function sentence(note) {
  const text = String(note).replace(/\bum\b/g, "µm");
  return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
}

/** Fill the notice above the summary: the intended use, then the summary's other notes. */
export function showNotice(job, model) {
  const s = job.result.summary || {};
  const intended = s.intended_use || (model && model.intended_use) || "";
  $("intended-use").textContent = intended ? sentence(intended) : NO_INTENDED_USE;
  const notes = $("result-notes");
  notes.replaceChildren();
  for (const note of s.notes || []) {
    if (INTENDED_USE_NOTE.test(note)) continue; // said above
    const item = document.createElement("li");
    item.textContent = sentence(note);
    notes.append(item);
  }
  notes.hidden = notes.children.length === 0;
  // the scale bar is only as right as the pixel size: say so under it where that was assumed
  const input = s.input || {};
  $("scalebar").dataset.note = input.pixel_size_source === "assumed" && input.pixel_size_um
    ? "pixel size assumed: " + input.pixel_size_um + " µm" : "";
}

/** One method value with its source, e.g. "25 px (model's default)". */
function withSource(text, entry) {
  const source = entry && SOURCES[entry.source];
  return source ? text + " (" + source + ")" : text;
}

/** The summary's rows of the method that ran: [term, value] pairs. */
export function methodRows(summary) {
  const method = summary.method || {};
  const value = (key, fallback) => (method[key] ? method[key].value : fallback);
  const cam = value("cam", summary.cam);
  const threshold = Number(value("threshold", summary.threshold));
  return [
    ["Method", withSource(cam === "scorecam" ? "ScoreCAM" : "CAM", method.cam)],
    ["Step", withSource(value("step", summary.step) + " px", method.step)],
    // results written before the parameter was named sigma say sigma_px
    ["Sigma", withSource(describeSigma(value("sigma", value("sigma_px", summary.sigma))), method.sigma || method.sigma_px)],
    ["Threshold", withSource(Number.isFinite(threshold) ? threshold.toFixed(2) : "—", method.threshold)],
  ];
}

/** The input's pixel size and where it came from, then the processing resolution. */
export function pixelSizeText(summary, requested) {
  const input = summary.input || {};
  const processing = summary.processing || {};
  const um = input.pixel_size_um || requested;
  const source = PIXEL_SIZE_SOURCES[input.pixel_size_source];
  return (um ? um + " µm" : "—") + (source ? " (" + source + ")" : "") + ", processed at " +
    processing.pixel_size_um + " µm (÷" + processing.downsample + ")";
}
