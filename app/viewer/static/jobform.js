/*
 * The "New job" form: upload a mosaic (with a progress bar), choose the model and parameters, see the
 * estimated cost, and submit the job.
 */

import { describeError, postJson, uploadFile } from "./api.js";
import { rememberMosaic } from "./joblist.js";
import { $, clearMessage, formatBytes, showMessage } from "./ui.js";

const form = { models: [], mosaic: null, uploadSeq: 0, onSubmitted: () => {} };

const FIELD_INPUTS = {
  model: "model-select",
  cam: "cam-cam",
  step: "step-input",
  sigma_px: "sigma-input",
  threshold: "threshold-input",
  pixel_size_um: "pixel-size-input",
  precision: "precision-select",
};

export function initJobForm({ onSubmitted }) {
  form.onSubmitted = onSubmitted;
  $("file-input").addEventListener("change", onFileChosen);
  $("upload-form").addEventListener("submit", (event) => event.preventDefault());
  $("model-select").addEventListener("change", applyModelDefaults);
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
  $("upload-form").reset();
  $("job-form").reset();
  $("upload-progress").value = 0;
  $("upload-status").textContent = "No file uploaded";
  $("job-fields").disabled = true;
  updateEstimate();
}

// -- upload ----------------------------------------------------------------------------------------

async function onFileChosen() {
  const file = $("file-input").files[0];
  if (!file) return;
  const progress = $("upload-progress");
  const status = $("upload-status");
  const seq = ++form.uploadSeq; // a file chosen while another uploads replaces it
  form.mosaic = null;
  $("job-fields").disabled = true;
  clearMessage();
  progress.value = 0;
  status.textContent = "Uploading " + file.name + "…";
  try {
    const mosaic = await uploadFile("v1/mosaics", file, (loaded, total) => {
      if (seq !== form.uploadSeq) return;
      progress.value = loaded / total;
      status.textContent = "Uploading " + Math.round((100 * loaded) / total) + "% (" + formatBytes(loaded) +
        " of " + formatBytes(total) + ")";
    });
    if (seq !== form.uploadSeq) return;
    progress.value = 1;
    form.mosaic = mosaic;
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

function selectedCard() {
  const model = form.models.find((m) => m.name === $("model-select").value);
  return model ? model.card : null;
}

function applyModelDefaults() {
  const card = selectedCard();
  if (!card) return;
  $("step-input").max = String(card.window);
  $("sigma-input").placeholder = "auto (" + card.window / 4 + ")";
  $("threshold-input").placeholder = "model's " + card.threshold;
  $("pixel-size-hint").textContent = "of the uploaded mosaic; the model reads " + card.pixel_size_um + " µm/px";
  updateEstimate();
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
  const card = selectedCard();
  const step = Number($("step-input").value);
  const pixelSizeUm = Number($("pixel-size-input").value);
  if (!form.mosaic || !card) {
    out.textContent = "Upload a mosaic to see the estimated cost.";
  } else if (!(Number.isInteger(step) && step >= 1 && step <= card.window) || !(pixelSizeUm > 0)) {
    out.textContent = "The step must be a whole number from 1 to " + card.window + " px and the pixel size above 0.";
  } else {
    const cost = estimateCost(form.mosaic, card, { step, pixelSizeUm });
    out.textContent = "Estimated cost: " + cost.windows.toLocaleString("en") + " windows of " + card.window +
      " px over " + cost.width + " × " + cost.height + " px (mosaic reduced " + cost.downsample + "×). " +
      (chosenMethod() === "scorecam"
        ? "ScoreCAM runs the network once per feature channel of every window: hundreds of times slower than CAM."
        : "CAM: one network pass per window.");
  }
}

// -- submitting ------------------------------------------------------------------------------------

function jobRequest() {
  const body = {
    mosaic_id: form.mosaic.id,
    model: $("model-select").value,
    cam: chosenMethod(),
    step: Number($("step-input").value),
    pixel_size_um: Number($("pixel-size-input").value),
    precision: $("precision-select").value,
  };
  const sigma = $("sigma-input").value.trim();
  const threshold = $("threshold-input").value.trim();
  if (sigma) body.sigma_px = Number(sigma);
  if (threshold) body.threshold = Number(threshold);
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
