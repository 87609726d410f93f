// The /v3 API as the gallery uses it. The key travels only in the Authorization header.

export const MAX_UPLOAD_BYTES = 10 * 1024 * 1024; // 10,485,760: the server's limit

/** An error the API (or the network) gave back; `message` is fit to show a person. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

// Messages for when the server gave no JSON body we could read.
const FALLBACK_MESSAGES = {
  0: "Could not reach the Pictor server. Check that it is running and try again.",
  400: "The server could not use this request.",
  401: "The API key was not accepted.",
  404: "This image no longer exists.",
  413: "The file is larger than the 10 MB limit.",
};

function fallbackMessage(status) {
  return FALLBACK_MESSAGES[status] || `The server answered with an error (${status}). Try again.`;
}

/** Build an ApiError from a status and the response text (the contract's JSON error shape). */
function errorFrom(status, text) {
  let code = "error";
  let message = "";
  try {
    const body = JSON.parse(text);
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || "");
    }
  } catch {
    // Not JSON (a proxy's page, an empty body): use the fallback below.
  }
  return new ApiError(status, code, message || fallbackMessage(status));
}

export class Api {
  /** @param {string} key  @param {() => void} onUnauthorized  called on any 401 */
  constructor(key, onUnauthorized = () => {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
    this.noStats = false;
  }

  async request(method, path, { json, signal } = {}) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json" };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, {
        method, headers, body, signal, cache: "no-store", credentials: "omit",
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "network", fallbackMessage(0));
    }
    if (response.status === 204) return null;
    const text = await response.text();
    if (!response.ok) {
      const error = errorFrom(response.status, text);
      if (response.status === 401) this.onUnauthorized(error);
      throw error;
    }
    return text ? JSON.parse(text) : null;
  }

  list({ folder, search, sort, missingAlt, page, pageSize }, signal) {
    const params = new URLSearchParams();
    if (folder) params.set("folder", folder);
    if (search) params.set("search", search);
    if (sort && sort !== "newest") params.set("sort", sort);
    if (missingAlt) params.set("missing_alt_text", "true");
    params.set("page", String(page));
    params.set("page_size", String(pageSize));
    return this.request("GET", `/v3/images?${params}`, { signal });
  }

  /** Images whose bytes have this SHA-256 (the duplicate check before an upload). */
  bySha256(hex) {
    return this.request("GET", `/v3/images?sha256=${encodeURIComponent(hex)}&page_size=10`);
  }

  /** The folder names in use (the contract's shape, used to check a key). */
  folders() {
    return this.request("GET", "/v3/images/folders");
  }

  /** Every folder with its count of images, created (empty) ones included. */
  folderCounts() {
    return this.request("GET", "/v3/folders");
  }

  createFolder(name) {
    return this.request("POST", "/v3/folders", { json: { name } });
  }

  /** Rename; onto an existing folder this merges the two. */
  renameFolder(name, newName) {
    return this.request("PATCH", `/v3/folders/${encodeURIComponent(name)}`, { json: { name: newName } });
  }

  /** Delete the folder; its images stay, without a folder. */
  deleteFolder(name) {
    return this.request("DELETE", `/v3/folders/${encodeURIComponent(name)}`);
  }

  /** Fetch statistics of one image, or null where the server keeps none (404). */
  async stats(id) {
    if (this.noStats) return null;
    try {
      return await this.request("GET", `/v3/images/${encodeURIComponent(id)}/stats`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        if (err.code === "route_not_found") this.noStats = true;
        return null;
      }
      throw err;
    }
  }

  get(id) {
    return this.request("GET", `/v3/images/${encodeURIComponent(id)}`);
  }

  update(id, changes) {
    return this.request("PATCH", `/v3/images/${encodeURIComponent(id)}`, { json: changes });
  }

  remove(id) {
    return this.request("DELETE", `/v3/images/${encodeURIComponent(id)}`);
  }

  /**
   * Upload one file with XMLHttpRequest, because fetch cannot report upload progress.
   * Resolves with the ImageResponse; rejects with an ApiError. `onProgress(fraction)`.
   * Returns {promise, abort}.
   */
  upload(file, { folder, altText }, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      const form = new FormData();
      if (altText) form.append("alt_text", altText);
      if (folder) form.append("folder", folder);
      form.append("file", file, file.name);

      xhr.open("POST", "/v3/images");
      xhr.setRequestHeader("Authorization", `Bearer ${this.key}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
      };
      xhr.onload = () => {
        if (xhr.status === 201 || xhr.status === 200) {
          try {
            resolve(JSON.parse(xhr.responseText));
          } catch {
            reject(new ApiError(xhr.status, "bad_response", "The server's answer could not be read."));
          }
          return;
        }
        const error = errorFrom(xhr.status, xhr.responseText);
        if (xhr.status === 401) this.onUnauthorized(error);
        reject(error);
      };
      xhr.onerror = () => {
        // A server may refuse an oversized body before reading it all and close the
        // connection; the browser then reports a network error instead of the 413.
        if (file.size > MAX_UPLOAD_BYTES) {
          reject(new ApiError(413, "too_large", fallbackMessage(413)));
        } else {
          reject(new ApiError(0, "network", "The upload was interrupted. Check the connection and try again."));
        }
      };
      xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
  }
}
