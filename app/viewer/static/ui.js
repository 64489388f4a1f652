/* Small page helpers: element lookup, the message banner, and number and time formatting. */

export const $ = (id) => document.getElementById(id);

/** Show one message in the banner; errors are announced at once (role=alert), notices politely. */
export function showMessage(text, kind = "error") {
  const box = $("message");
  box.className = "message " + kind;
  box.setAttribute("role", kind === "info" ? "status" : "alert");
  $("message-text").textContent = text;
  box.hidden = false;
}

export function clearMessage() {
  $("message").hidden = true;
}

export function formatBytes(n) {
  if (n >= 1024 ** 3) return (n / 1024 ** 3).toFixed(1) + " GB";
  if (n >= 1024 ** 2) return (n / 1024 ** 2).toFixed(1) + " MB";
  return Math.max(1, Math.round(n / 1024)) + " kB";
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + (s % 60) + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

export function formatTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function formatNumber(value, digits) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}
