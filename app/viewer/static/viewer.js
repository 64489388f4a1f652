/*
 * The rcmseg viewer page: sign in with a token, upload a mosaic and start a job, follow the job list,
 * and open a finished job's mosaic, heatmap and mask in OpenSeadragon.
 *
 * Plain ES modules, no build step: api.js (requests), jobform.js (upload and parameters), joblist.js
 * (polling), layers.js (OpenSeadragon), result.js (summary and downloads). The token is kept in
 * sessionStorage, so it is forgotten when the browser tab closes.
 */

import { apiJson, describeError, session } from "./api.js";
import { initJobForm, resetJobForm, setModels } from "./jobform.js";
import { initJobList, markOpen, pollJobs, refreshMosaicNames, revealJob, stopJobList, upsertJob } from "./joblist.js";
import { clearLayers, destroyViewer, initLayerControls, showLayers, view } from "./layers.js";
import { hideResult, initResultPanel, showResult } from "./result.js";
import { $, clearMessage, formatTime, showMessage } from "./ui.js";

const TOKEN_KEY = "rcmseg.token";

let openJobId = null;
let signedIn = false;

function setSignedIn(value) {
  signedIn = value;
  $("signin-form").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  $("workspace").hidden = !signedIn;
  $("welcome").hidden = signedIn;
}

async function signIn(token) {
  session.token = token;
  let models;
  try {
    models = (await apiJson("v1/models")).models;
  } catch (error) {
    session.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showMessage("Sign-in failed: " + (error.status === 401 ? "this token was not accepted." : describeError(error)));
    $("token-input").focus();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  clearMessage();
  setSignedIn(true);
  setModels(models);
  await refreshMosaicNames();
  pollJobs();
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  closeJob();
  destroyViewer();
  stopJobList();
  resetJobForm();
  $("signin-form").reset();
  setSignedIn(false);
  if (reason) showMessage(reason);
  else clearMessage();
}

function openJob(job) {
  if (!job || !job.result) return;
  clearMessage();
  openJobId = job.id;
  $("stage-empty").hidden = true;
  showResult(job);
  markOpen(job.id);
  showLayers(job);
  revealStage();
}

/** Where the image is not at the top of the window (a narrow one scrolled to the list), scroll it there. */
function revealStage() {
  const top = document.querySelector(".stage").getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight / 2) window.scrollTo({ top: 0 });
}

function closeJob() {
  openJobId = null;
  clearLayers();
  hideResult();
  $("stage-empty").hidden = false;
}

function onJobSubmitted(job) {
  upsertJob(job);
  const earlier = "job " + job.id.slice(0, 8) + " of " + formatTime(job.created_at);
  if (job.reused && job.status === "finished" && job.result) {
    openJob(job); // it clears the banner: the notice comes after
    showMessage("Already segmented with these parameters — showing the earlier result (" + earlier + ").", "info");
  } else {
    if (job.reused) {
      showMessage("Already submitted with these parameters — the earlier job (" + earlier + ") is " + job.status +
        "; follow it in the list.", "info");
    }
    revealJob(job.id);
  }
  pollJobs();
}

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value.trim());
  });
  $("signout-button").addEventListener("click", () => signOut());
  $("message-close").addEventListener("click", clearMessage);
  session.onUnauthorized = () => {
    if (signedIn) signOut("Your token is no longer accepted. Please sign in again.");
  };
  initJobForm({ onSubmitted: onJobSubmitted });
  initJobList({ onOpen: openJob });
  initLayerControls();
  initResultPanel();
  if (typeof OpenSeadragon === "undefined") {
    showMessage("OpenSeadragon is not installed on this server (make viewer-assets): results cannot be shown.");
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
}

/** Read-only state for end-to-end tests and for debugging from the browser console. */
window.rcmseg = Object.freeze({
  get viewer() {
    return view.viewer;
  },
  get layers() {
    return view.layers;
  },
  get openJobId() {
    return openJobId;
  },
  stats: view.stats,
});

start();
