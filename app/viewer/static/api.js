/*
 * Talking to the rcmseg API. Every request carries the session's bearer token; failures become an
 * ApiError holding the API's {code, message, field}. Paths are relative to the page, so the page also
 * works when the service is mounted under a path prefix.
 */

/** The signed-in token (sessionStorage keeps it for this browser tab only) and what to do on a 401. */
export const session = {
  token: null,
  onUnauthorized: () => {},
};

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

export function authHeaders() {
  return { Authorization: "Bearer " + session.token };
}

/** The API's {code, message} body, also when a proxy in front wraps it as {detail: {...}}. */
function errorFromBody(status, statusText, body) {
  const detail = body && typeof body.detail === "object" && body.detail !== null ? body.detail : body;
  if (detail && detail.message) return new ApiError(status, detail.code || "error", detail.message, detail.field);
  return new ApiError(status, "http_" + status, statusText || "request failed (HTTP " + status + ")");
}

function failed(error) {
  if (error.status === 401 && session.token) session.onUnauthorized();
  return error;
}

export async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, authHeaders());
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (_networkError) {
    throw new ApiError(0, "network", "The service cannot be reached. Check the connection and try again.");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw failed(errorFromBody(response.status, response.statusText, body));
  }
  return response;
}

export async function apiJson(path, options) {
  const response = await api(path, options);
  return response.json();
}

export function postJson(path, body) {
  return apiJson(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** POST a file as multipart field "file" with XMLHttpRequest, which (unlike fetch) reports upload progress. */
export function uploadFile(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", "Bearer " + session.token);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(failed(errorFromBody(xhr.status, xhr.statusText, xhr.response)));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload was interrupted. Try again."));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

export function describeError(error) {
  if (error instanceof ApiError) return error.message + (error.status ? " (" + error.code + ")" : "");
  return String(error && error.message ? error.message : error);
}
