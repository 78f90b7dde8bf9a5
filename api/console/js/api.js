// The console's only way to the service: the public /v1 API, with the key from this
// tab's session storage in the Authorization header (never in a URL, never logged).

const KEY = "editq.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  signIn: (key) => sessionStorage.setItem(KEY, key),
  signOut: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
  }
}

export async function api(path, { method = "GET", json, form, query } = {}) {
  const headers = {};
  const key = session.key();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets multipart/form-data with its boundary
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      for (const v of [].concat(value)) {
        if (v !== undefined && v !== null && v !== "") params.append(name, v);
      }
    }
    if ([...params].length) url += `?${params}`;
  }
  const response = await fetch(url, { method, headers, body });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const problem = typeof data === "object" ? data : { detail: String(data) };
    // A key refused mid-session (revoked, or the tenant erased): nothing it showed may stay
    // on screen, so the shell signs out and asks for a key again.
    if (response.status === 401 && key) {
      session.signOut();
      window.dispatchEvent(new CustomEvent("editq:signed-out", { detail: problem }));
    }
    throw new ApiError(response.status, problem, response.headers.get("Retry-After"));
  }
  return data;
}

// Every problem the API answers, in words a person can act on.
export function describe(error) {
  if (!(error instanceof ApiError)) return `Could not reach the API: ${error.message}`;
  const p = error.problem;
  switch (error.status) {
    case 401: return "The API key was refused: paste a valid key to sign in.";
    case 402: return `Over budget: ${p.detail}`;
    case 403: return `Not allowed: ${p.detail}`;
    case 404: return `Not found: ${p.detail}`;
    case 409: return `Conflict: ${p.detail}`;
    case 413: return `Too large: ${p.detail}`;
    case 415: return `Unsupported content type: ${p.detail}`;
    case 422: {
      if (p.refusals) {
        return "Some models cannot take this request: " +
          p.refusals.map((r) => `${r.model}: ${r.detail}`).join("; ");
      }
      const field = p.field || (p.errors && p.errors[0] && p.errors[0].loc);
      return field ? `Check ${field}: ${p.detail}` : `Invalid request: ${p.detail}`;
    }
    case 429: {
      const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
      return `Too many requests: ${p.detail}.${wait}`;
    }
    case 503: return `The service is unavailable right now: ${p.detail}. Retry shortly.`;
    default: return `Error ${error.status}: ${p.detail || p.title}`;
  }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function showMessage(text, kind = "error") {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind === "error" ? "" : kind;
  box.hidden = !text;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

// Server-Sent Events read with fetch (EventSource cannot send the Authorization header,
// and the key never goes in a URL): `onEvent({ id, event, data })` for each event, until
// the server ends the stream. A dropped connection is resumed with Last-Event-ID, so no
// event is lost or seen twice; answers the last event's id.
export async function stream(path, onEvent, { lastEventId = null, retries = 5, signal } = {}) {
  let last = lastEventId;
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: "text/event-stream" };
    const key = session.key();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (last !== null) headers["Last-Event-ID"] = last;
    let response;
    try {
      response = await fetch(path, { headers, signal });
    } catch (error) {
      if (signal?.aborted) return last; // the page moved on: stop quietly
      if (attempt >= retries) throw error;
      await sleep(500 * (attempt + 1));
      continue;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
      if (response.status === 401 && key) {
        session.signOut();
        window.dispatchEvent(new CustomEvent("editq:signed-out", { detail: problem }));
      }
      throw new ApiError(response.status, problem, response.headers.get("Retry-After"));
    }
    try {
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return last; // the server ended it: the thing has ended
        buffer += value.replaceAll("\r\n", "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = { event: "message", data: [] };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue; // a comment: the heartbeat
            const at = line.indexOf(":");
            const name = at < 0 ? line : line.slice(0, at);
            const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
            if (name === "data") fields.data.push(text);
            else fields[name] = text;
          }
          if (!fields.data.length) continue;
          if (fields.id !== undefined) last = fields.id;
          onEvent({ id: fields.id ?? null, event: fields.event, data: JSON.parse(fields.data.join("\n")) });
        }
      }
    } catch (error) {
      if (signal?.aborted) return last;
      if (attempt >= retries) throw error;
      await sleep(500 * (attempt + 1)); // dropped: resume after the last event seen
    }
  }
}

// "3 s ago", "5 min ago", else the UTC date and time: for lists a person scans.
export function ago(iso, now = Date.now()) {
  const seconds = Math.round((now - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return iso.replace("T", " ").slice(0, 16) + " UTC";
}

export function usd(text) {
  return text === null || text === undefined ? "-" : `$${text}`;
}

// The catalog, fetched once per page load: it changes only with a deploy.
let catalog;
export async function models() {
  catalog = catalog || (await api("/v1/models")).data;
  return catalog;
}

export function operationsOf(list) {
  return [...new Set(list.flatMap((m) => m.operations))].sort();
}

// An image's size, read in the browser, for recommendations that depend on it.
export function imageSize(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { resolve({ width: img.naturalWidth, height: img.naturalHeight });
                         URL.revokeObjectURL(url); };
    img.onerror = () => { resolve(null); URL.revokeObjectURL(url); };
    img.src = url;
  });
}

// A file as an image field: sent straight to storage as a direct upload (POST
// /v1/uploads, then its presigned PUT), named by its upload id; where the browser may not
// reach the storage (no CORS rules for this origin), the file itself, sent in the form.
export async function imageField(file) {
  let slot;
  try {
    slot = await api("/v1/uploads", { method: "POST", json: { content_type: file.type, size: file.size } });
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) return file; // a type uploads refuse: the form's check says why
    throw error;
  }
  try {
    const put = await fetch(slot.url, { method: slot.method, headers: { "Content-Type": slot.headers["Content-Type"] }, body: file });
    if (put.ok) return slot.id;
  } catch (error) {
    // the storage is not reachable from this page: fall back to the form
  }
  return file;
}
