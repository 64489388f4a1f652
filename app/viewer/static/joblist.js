/*
 * The owner's jobs, polled every 2 s while one is queued or running (10 s otherwise): status, progress,
 * the time left (measured from the job's own rate, eta.js), errors, and Open / Cancel buttons.
 * Rows are updated in place, so keyboard focus stays on a button while the list refreshes.
 */

import { apiJson, describeError, session } from "./api.js";
import { roundedSeconds, WindowRate } from "./eta.js";
import { $, clearMessage, formatDuration, formatTime, showMessage } from "./ui.js";

const POLL_LIVE_MS = 2000;
const POLL_IDLE_MS = 10000;

const list = {
  jobs: new Map(),
  mosaicNames: new Map(),
  rates: new Map(), // job id -> WindowRate of its windows stage, from the polls
  openJobId: null,
  timer: null,
  onOpen: () => {},
};

export function initJobList({ onOpen }) {
  list.onOpen = onOpen;
}

export function rememberMosaic(id, name) {
  list.mosaicNames.set(id, name);
}

export function jobName(job) {
  return list.mosaicNames.get(job.mosaic_id) || "mosaic " + job.mosaic_id.slice(0, 8);
}

export function upsertJob(job) {
  list.jobs.set(job.id, job);
  render();
}

/** Scroll the job's row into view (the list is below the form, and below the image on a narrow window). */
export function revealJob(jobId) {
  const row = $("job-list").querySelector('li[data-job-id="' + jobId + '"]');
  if (row) row.scrollIntoView({ block: "nearest" });
}

export function markOpen(jobId) {
  list.openJobId = jobId;
  render();
}

export async function refreshMosaicNames() {
  try {
    const body = await apiJson("v1/mosaics");
    for (const m of body.mosaics) list.mosaicNames.set(m.id, m.filename || "mosaic " + m.id.slice(0, 8));
  } catch (_error) {
    // names are a convenience: rows fall back to the mosaic id
  }
}

export async function pollJobs() {
  clearTimeout(list.timer);
  if (!session.token) return;
  try {
    const body = await apiJson("v1/jobs");
    list.jobs = new Map(body.jobs.map((j) => [j.id, j]));
    measureRates(performance.now() / 1000);
    if (body.jobs.some((j) => !list.mosaicNames.has(j.mosaic_id))) await refreshMosaicNames();
    render();
  } catch (error) {
    if (session.token) showMessage("Could not refresh the job list: " + describeError(error));
  }
  if (!session.token) return;
  const live = Array.from(list.jobs.values()).some((j) => j.status === "queued" || j.status === "running");
  list.timer = setTimeout(pollJobs, live ? POLL_LIVE_MS : POLL_IDLE_MS);
}

export function stopJobList() {
  clearTimeout(list.timer);
  list.timer = null;
  list.jobs.clear();
  list.rates.clear();
  list.openJobId = null;
  $("job-list").replaceChildren();
  $("jobs-empty").hidden = false;
}

// -- rendering -------------------------------------------------------------------------------------

const STAGES = {
  queued: "Waiting for a worker",
  read: "Reading the mosaic",
  windows: "Computing windows",
  export: "Writing the layers",
};

/** Feed each running job's window count to its rate; forget the jobs that stopped running. */
function measureRates(now) {
  for (const id of list.rates.keys()) {
    const job = list.jobs.get(id);
    if (!job || job.status !== "running") list.rates.delete(id);
  }
  for (const job of list.jobs.values()) {
    if (job.status !== "running" || job.stage !== "windows" || !Number.isFinite(job.windows_done)) continue;
    if (!list.rates.has(job.id)) list.rates.set(job.id, new WindowRate());
    list.rates.get(job.id).add(now, job.windows_done);
  }
}

function secondsLeft(job) {
  const rate = list.rates.get(job.id);
  if (!rate || job.stage !== "windows" || !job.windows_total) return null;
  return rate.secondsLeft(job.windows_total, performance.now() / 1000);
}

function progressDetail(job) {
  const stage = job.cancel_requested ? "Stopping" : STAGES[job.stage] || job.stage || job.status;
  const parts = [stage + " " + Math.round(100 * job.progress) + "%"];
  if (job.stage === "windows" && job.windows_total) {
    parts.push((job.windows_done || 0).toLocaleString("en") + " / " + job.windows_total.toLocaleString("en"));
  }
  const left = secondsLeft(job);
  if (left !== null) parts.push("about " + formatDuration(roundedSeconds(left)) + " of windows left");
  return parts;
}

function jobDetail(job) {
  const parts = [];
  if (job.status === "running" || job.status === "queued") parts.push(...progressDetail(job));
  if (job.status === "finished" && job.result) {
    parts.push("aspecific " + (100 * job.result.summary.aspecific_area_fraction).toFixed(1) + "%");
  }
  parts.push(job.model + ", " + (job.params.cam === "scorecam" ? "ScoreCAM" : "CAM"));
  parts.push(formatTime(job.created_at));
  return parts.join(" · ");
}

const KNOWN_ERRORS = {
  worker_lost: "The worker stopped while running this job: ",
  job_timeout: "The job ran too long and was stopped: ",
  result_expired: "The result has expired: ",
};

function errorText(error) {
  if (error.code === "canceled") return "Canceled.";
  const prefix = KNOWN_ERRORS[error.code];
  return prefix ? prefix + error.message : "Failed: " + error.message + " (" + error.code + ")";
}

function newRow(jobId) {
  const row = document.createElement("li");
  row.className = "job";
  row.dataset.jobId = jobId;
  row.innerHTML =
    '<div class="job-head"><span class="job-name"></span><span class="badge"></span></div>' +
    '<progress class="job-progress" max="1"></progress>' +
    '<div class="job-detail muted"></div><div class="job-error" hidden></div>' +
    '<div class="job-actions"><button type="button" class="open-job">Open</button>' +
    '<button type="button" class="cancel-job">Cancel</button></div>';
  row.querySelector(".open-job").addEventListener("click", () => list.onOpen(list.jobs.get(jobId)));
  row.querySelector(".cancel-job").addEventListener("click", () => cancelJob(jobId));
  return row;
}

function updateRow(row, job) {
  const name = jobName(job);
  const live = job.status === "queued" || job.status === "running";
  row.querySelector(".job-name").textContent = name;
  const badge = row.querySelector(".badge");
  badge.textContent = job.status;
  badge.className = "badge status-" + job.status;
  const progress = row.querySelector(".job-progress");
  progress.value = job.progress;
  progress.setAttribute("aria-label", "Progress of " + name + ": " + Math.round(100 * job.progress) + "%");
  row.querySelector(".job-detail").textContent = jobDetail(job);
  const error = row.querySelector(".job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? errorText(job.error) : "";
  const open = row.querySelector(".open-job");
  open.hidden = job.status !== "finished";
  open.setAttribute("aria-label", "Open the result of " + name);
  const cancel = row.querySelector(".cancel-job");
  cancel.hidden = !live || job.cancel_requested;
  cancel.setAttribute("aria-label", "Cancel the job on " + name);
  row.classList.toggle("is-open", list.openJobId === job.id);
}

function render() {
  const container = $("job-list");
  const existing = new Map(Array.from(container.children, (row) => [row.dataset.jobId, row]));
  const jobs = Array.from(list.jobs.values()).sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  jobs.forEach((job, i) => {
    const row = existing.get(job.id) || newRow(job.id);
    updateRow(row, job);
    if (container.children[i] !== row) container.insertBefore(row, container.children[i] || null);
  });
  while (container.children.length > jobs.length) container.lastElementChild.remove();
  $("jobs-empty").hidden = jobs.length > 0;
}

async function cancelJob(jobId) {
  clearMessage();
  try {
    upsertJob(await apiJson("v1/jobs/" + jobId, { method: "DELETE" }));
  } catch (error) {
    showMessage("Could not cancel the job: " + describeError(error));
  }
}
