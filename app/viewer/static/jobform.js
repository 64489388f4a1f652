/*
 * The "New job" form: upload a mosaic (with a progress bar), choose the model and parameters, see the
 * estimated cost, and submit the job.
 */

import { describeError, postJson, uploadFile } from "./api.js";
import { rememberMosaic } from "./joblist.js";
import { recordedPixelSizeUm } from "./pixelsize.js";
import { describeSigma, isPlainAveraging } from "./provenance.js";
import { $, clearMessage, formatBytes, showMessage } from "./ui.js";

const form = { models: [], mosaic: null, filePixelSizeUm: null, uploadSeq: 0, onSubmitted: () => {} };

const FIELD_INPUTS = {
  model: "model-select",
  cam: "cam-cam",
  step: "step-input",
  sigma: "sigma-input",
  threshold: "threshold-input",
  pixel_size_um: "pixel-size-input",
  precision: "precision-select",
};

export function initJobForm({ onSubmitted }) {
  form.onSubmitted = onSubmitted;
  $("file-input").addEventListener("change", onFileChosen);
  $("upload-form").addEventListener("submit", (event) => event.preventDefault());
  $("model-select").addEventListener("change", applyModelDefaults);
  $("sigma-input").addEventListener("input", checkSigma);
  $("job-form").addEventListener("input", updateEstimate);
  $("job-form").addEventListener("submit", onSubmit);
}

export function setModels(models) {
  form.models = models;
  const select = $("model-select");
  select.replaceChildren();
  for (const model of models) {
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = model.name + (model.default ? " (default)" : "");
    option.selected = Boolean(model.default);
    select.append(option);
  }
  if (!models.length) showMessage("The service has no models installed; ask its administrator.");
  applyModelDefaults();
}

export function resetJobForm() {
  form.uploadSeq += 1;
  form.mosaic = null;
  form.filePixelSizeUm = null;
  $("upload-form").reset();
  $("job-form").reset();
  $("upload-progress").value = 0;
  $("upload-status").textContent = "No file uploaded";
  $("job-fields").disabled = true;
  applyModelDefaults();
}

// -- upload ----------------------------------------------------------------------------------------

async function onFileChosen() {
  const file = $("file-input").files[0];
  if (!file) return;
  const progress = $("upload-progress");
  const status = $("upload-status");
  const seq = ++form.uploadSeq; // a file chosen while another uploads replaces it
  form.mosaic = null;
  form.filePixelSizeUm = null;
  $("job-fields").disabled = true;
  clearMessage();
  progress.value = 0;
  status.textContent = "Uploading " + file.name + "…";
  const recorded = recordedPixelSizeUm(file); // for the estimate; the service reads the file itself
  try {
    const mosaic = await uploadFile("v1/mosaics", file, (loaded, total) => {
      if (seq !== form.uploadSeq) return;
      progress.value = loaded / total;
      status.textContent = "Uploading " + Math.round((100 * loaded) / total) + "% (" + formatBytes(loaded) +
        " of " + formatBytes(total) + ")";
    });
    const recordedUm = await recorded;
    if (seq !== form.uploadSeq) return;
    progress.value = 1;
    form.mosaic = mosaic;
    form.filePixelSizeUm = recordedUm;
    showPixelSizeHint();
    rememberMosaic(mosaic.id, mosaic.filename || file.name);
    document.dispatchEvent(new CustomEvent("rcmseg:mosaic-uploaded", { detail: mosaic })); // layers.js shows it
    status.textContent = (mosaic.existing ? "Uploaded before: " : "Uploaded: ") + (mosaic.filename || file.name) +
      ", " + mosaic.width + " × " + mosaic.height + " px, " + mosaic.bit_depth + "-bit";
    $("job-fields").disabled = false;
    updateEstimate();
  } catch (error) {
    if (seq !== form.uploadSeq) return;
    progress.value = 0;
    status.textContent = "Upload failed";
    showMessage("Upload of " + file.name + " rejected: " + describeError(error));
  }
}

// -- parameters and cost ---------------------------------------------------------------------------

/** The input pixel size the engine assumes when neither the request nor the file gives one. */
const ASSUMED_PIXEL_SIZE_UM = 0.5;
const PLAIN_AVERAGING = "none";

/** A model of GET /v1/models by name ({name, card, defaults, intended_use}), or null. */
export function modelByName(name) {
  return form.models.find((m) => m.name === name) || null;
}

function selectedModel() {
  return modelByName($("model-select").value);
}

function selectedCard() {
  const model = selectedModel();
  return model ? model.card : null;
}

/** The defaults a request that leaves a field empty gets (the card's; older services send none). */
function methodDefaults(model) {
  const d = model.defaults || {};
  return {
    cam: d.cam || "cam",
    step: d.step ?? 25,
    sigma: d.sigma ?? d.sigma_px ?? PLAIN_AVERAGING, // sigma_px (null: plain averaging): cards of before
    threshold: d.threshold ?? model.card.threshold,
    chosen_by: d.chosen_by || "",
  };
}

/** Placeholders and the method radio from the chosen model's defaults: an empty field sends nothing. */
function applyModelDefaults() {
  const model = selectedModel();
  if (!model) return;
  const card = model.card;
  const d = methodDefaults(model);
  $("step-input").max = String(card.window);
  $("step-input").placeholder = d.step + " (default)";
  $("sigma-input").placeholder = (isPlainAveraging(d.sigma) ? PLAIN_AVERAGING : +Number(d.sigma).toFixed(2)) + " (default)";
  $("threshold-input").placeholder = d.threshold + " (default)";
  const cam = document.querySelector("input[name=cam][value=" + (d.cam === "scorecam" ? "scorecam" : "cam") + "]");
  cam.checked = true;
  $("defaults-hint").textContent = "An empty field takes the model's default: " +
    (d.cam === "scorecam" ? "ScoreCAM" : "CAM") + ", step " + d.step + " px, sigma " + describeSigma(d.sigma) +
    ", threshold " + d.threshold + "." + (d.chosen_by ? " Chosen by: " + d.chosen_by + "." : "");
  showPixelSizeHint();
  checkSigma();
  updateEstimate();
}

/** Empty pixel size: what the file records (read here for the estimate), else the engine's assumption. */
function showPixelSizeHint() {
  const card = selectedCard();
  const recorded = form.filePixelSizeUm;
  $("pixel-size-input").placeholder = recorded ? +recorded.toPrecision(4) + " (from the file)" : "from the file";
  $("pixel-size-hint").textContent = "of the uploaded mosaic; empty: " + (recorded
    ? "the " + +recorded.toPrecision(4) + " µm the file records"
    : form.mosaic ? "the file records none, so " + ASSUMED_PIXEL_SIZE_UM + " µm is assumed"
    : "what the file records, else " + ASSUMED_PIXEL_SIZE_UM + " µm assumed") +
    (card ? ". The model reads " + card.pixel_size_um + " µm/px." : ".");
}

/** Sigma is a number of pixels above 0 or "none" (the service's one rule); the browser points out anything else. */
function checkSigma() {
  const input = $("sigma-input");
  const text = input.value.trim().toLowerCase();
  const value = Number(text);
  const ok = text === "" || text === PLAIN_AVERAGING || (Number.isFinite(value) && value > 0);
  input.setCustomValidity(ok ? "" : 'Sigma is a number of pixels above 0, or "none" for plain averaging.');
}

/** Python's round(): halves go to the even neighbour, as the engine rounds the downsample factor. */
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Windows along one axis: every `step`, plus one flush with the far edge (the engine's window grid). */
function windowsAlong(length, window, step) {
  if (length <= window) return 1;
  const regular = Math.floor((length - window) / step) + 1;
  return (length - window) % step === 0 ? regular : regular + 1;
}

export function estimateCost(mosaic, card, { step, pixelSizeUm }) {
  const downsample = Math.max(1, roundHalfEven(card.pixel_size_um / pixelSizeUm));
  const width = Math.max(1, Math.floor(mosaic.width / downsample));
  const height = Math.max(1, Math.floor(mosaic.height / downsample));
  const windows = windowsAlong(height, card.window, step) * windowsAlong(width, card.window, step);
  return { downsample, width, height, windows };
}

function chosenMethod() {
  return document.querySelector("input[name=cam]:checked").value;
}

function updateEstimate() {
  const out = $("cost-estimate");
  const model = selectedModel();
  const card = model ? model.card : null;
  const stepText = $("step-input").value.trim();
  const pixelText = $("pixel-size-input").value.trim();
  const step = stepText ? Number(stepText) : model ? methodDefaults(model).step : NaN;
  const pixelSizeUm = pixelText ? Number(pixelText) : form.filePixelSizeUm || ASSUMED_PIXEL_SIZE_UM;
  if (!form.mosaic || !card) {
    out.textContent = "Upload a mosaic to see the estimated cost.";
  } else if (!(Number.isInteger(step) && step >= 1 && step <= card.window) || !(pixelSizeUm > 0)) {
    out.textContent = "The step must be a whole number from 1 to " + card.window + " px and the pixel size above 0.";
  } else {
    const cost = estimateCost(form.mosaic, card, { step, pixelSizeUm });
    const reduced = cost.downsample > 1 ? "mosaic reduced " + cost.downsample + "×" : "mosaic at full resolution";
    const source = pixelText ? "" : form.filePixelSizeUm
      ? ", at the file's " + +form.filePixelSizeUm.toPrecision(4) + " µm/px"
      : ", at " + ASSUMED_PIXEL_SIZE_UM + " µm/px assumed";
    out.textContent = "Estimated cost: " + cost.windows.toLocaleString("en") +
      (cost.windows === 1 ? " window" : " windows") + " of " + card.window + " px over " + cost.width + " × " +
      cost.height + " px (" + reduced + source + "). " +
      (chosenMethod() === "scorecam"
        ? "ScoreCAM runs the network once per feature channel of every window: hundreds of times slower than CAM."
        : "CAM: one network pass per window.");
  }
}

// -- submitting ------------------------------------------------------------------------------------

/** The job's body: a field left empty is not sent, so the model card's default applies (and is recorded so). */
function jobRequest() {
  const body = {
    mosaic_id: form.mosaic.id,
    model: $("model-select").value,
    precision: $("precision-select").value,
  };
  const model = selectedModel();
  const cam = chosenMethod();
  if (!model || cam !== methodDefaults(model).cam) body.cam = cam;
  const step = $("step-input").value.trim();
  const sigma = $("sigma-input").value.trim().toLowerCase();
  const threshold = $("threshold-input").value.trim();
  const pixelSize = $("pixel-size-input").value.trim();
  if (step) body.step = Number(step);
  if (sigma) body.sigma = sigma === PLAIN_AVERAGING ? PLAIN_AVERAGING : Number(sigma);
  if (threshold) body.threshold = Number(threshold);
  if (pixelSize) body.pixel_size_um = Number(pixelSize);
  return body;
}

/** Point at the field the API named as invalid (or clear the marks when `field` is null). */
function markInvalid(field) {
  for (const id of Object.values(FIELD_INPUTS)) $(id).removeAttribute("aria-invalid");
  const input = field && $(FIELD_INPUTS[field]);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

async function onSubmit(event) {
  event.preventDefault();
  if (!form.mosaic) return;
  clearMessage();
  markInvalid(null);
  $("submit-job").disabled = true;
  try {
    form.onSubmitted(await postJson("v1/jobs", jobRequest()));
  } catch (error) {
    markInvalid(error.field);
    showMessage("Job not started: " + describeError(error));
  } finally {
    $("submit-job").disabled = false;
  }
}
