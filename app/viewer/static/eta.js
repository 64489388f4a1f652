/*
 * The time a running job has left, from the rate at which this job computes its windows: measured between
 * the progress reports the page sees, smoothed over the last half minute or so, and given only once enough
 * has been measured to mean something. Time up to the first report seen is never counted: it holds the
 * model's warm-up (and, for a page opened mid-job, an unknown part of a batch).
 */

/** Seconds over which earlier reports fade out of the rate (an exponential time weight). */
const SMOOTHING_S = 30;
/** No estimate before this much time and this many reports have been measured. */
const MIN_MEASURED_S = 5;
const MIN_REPORTS = 2;

export class WindowRate {
  constructor() {
    this.first = null; // the count when first seen: measuring starts at its first change
    this.last = null; // the latest report counted: {t, done}
    this.measuredS = 0;
    this.reports = 0;
    this.windows = 0; // the decayed sums whose ratio is the smoothed rate
    this.seconds = 0;
  }

  /** Record that `done` windows were computed by time `t` (s); a repeated count is not a new report. */
  add(t, done) {
    const latest = this.last || this.first;
    if (latest === null || done < latest.done) {
      Object.assign(this, new WindowRate(), { first: { t, done } }); // first seen, or a restarted attempt
      return;
    }
    if (this.last === null) {
      if (done > this.first.done) this.last = { t, done }; // the first batch seen: measuring starts here
      return;
    }
    const dt = t - this.last.t;
    if (done === this.last.done || !(dt > 0)) return;
    const fade = Math.exp(-dt / SMOOTHING_S);
    this.windows = this.windows * fade + (done - this.last.done);
    this.seconds = this.seconds * fade + dt;
    this.measuredS += dt;
    this.reports += 1;
    this.last = { t, done };
  }

  /** Windows per second, smoothed; null before any two reports. */
  rate() {
    return this.seconds > 0 ? this.windows / this.seconds : null;
  }

  /** Seconds left for `total` windows at time `now`, or null while too little has been measured. */
  secondsLeft(total, now) {
    const rate = this.rate();
    if (!(rate > 0) || this.reports < MIN_REPORTS || this.measuredS < MIN_MEASURED_S) return null;
    const left = (total - this.last.done) / rate - Math.max(0, now - this.last.t);
    return left > 0 ? left : null;
  }
}

/** A duration rounded as a person would say it: to 5 s under a minute, 10 s under ten, then minutes. */
export function roundedSeconds(seconds) {
  const unit = seconds < 60 ? 5 : seconds < 600 ? 10 : 60;
  return Math.max(unit, Math.round(seconds / unit) * unit);
}
