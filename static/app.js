// The Pictor gallery: sign in, browse, upload, edit, copy, delete.
// Plain ES modules, no build step. API data only ever reaches the page through textContent,
// attributes set one by one, or .value: never through innerHTML.

import { Api, ApiError } from "./api.js";
import {
  h, icon, ICONS, imgTag, formatBytes, formatNumber, timeElement, debounce, localImageUrl, copyText,
} from "./dom.js";

const PAGE_SIZE = 48;
const THUMB_MAX = 320; // the server's thumbnail box
const SEARCH_DELAY_MS = 250;
const UPLOAD_CONCURRENCY = 3;
const KEY_NAME = "pictor.apiKey";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// State

const state = {
  api: null,
  folder: null, // exact folder filter, or null for all images
  search: "",
  folders: [],
  items: [], // ImageResponse, in display order (newest first)
  ids: new Set(),
  total: 0,
  done: false,
  loading: false,
  generation: 0,
  minPage: 1,
  abort: null,
};

// ---------------------------------------------------------------------------------------------
// The view in the URL: folder and search live in the fragment (#folder=...&search=...), so
// Back, reload and bookmarks return to the same view. The key never goes there.

function viewFromUrl() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  return { folder: params.get("folder") || null, search: (params.get("search") || "").trim() };
}

function urlForView() {
  const params = new URLSearchParams();
  if (state.folder !== null) params.set("folder", state.folder);
  if (state.search) params.set("search", state.search);
  const fragment = params.toString();
  return window.location.pathname + window.location.search + (fragment ? `#${fragment}` : "");
}

// A new folder is a new history entry; typing a search only replaces the current one.
function rememberView({ push = false } = {}) {
  const url = urlForView();
  if (url === window.location.pathname + window.location.search + window.location.hash) return;
  if (push) window.history.pushState(null, "", url);
  else window.history.replaceState(null, "", url);
}

function applyViewFromUrl() {
  const view = viewFromUrl();
  if (!state.api || (view.folder === state.folder && view.search === state.search)) return;
  state.folder = view.folder;
  state.search = view.search;
  $("search-input").value = view.search;
  renderFolders();
  renderHeading();
  reload();
}

// ---------------------------------------------------------------------------------------------
// The key: kept in sessionStorage (forgotten with the tab), or in localStorage when the user
// ticks "keep me signed in". It is sent only in the Authorization header, never in a URL.

function savedKey() {
  try {
    return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
  } catch {
    return "";
  }
}

function saveKey(key, remember) {
  forgetKey();
  try {
    (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
  } catch {
    // Storage disabled: the key lives only as long as this page.
  }
}

function forgetKey() {
  try {
    sessionStorage.removeItem(KEY_NAME);
    localStorage.removeItem(KEY_NAME);
  } catch {
    // Nothing stored.
  }
}

// ---------------------------------------------------------------------------------------------
// Sign in and out

function showSignIn(message = "", isError = false) {
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  const notice = $("signin-message");
  notice.textContent = message;
  notice.hidden = !message;
  notice.classList.toggle("error", isError);
  const input = $("signin-key");
  input.value = "";
  input.setAttribute("aria-invalid", String(isError));
  document.title = "Sign in · Pictor";
  input.focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("signin-key");
  const key = input.value.trim();
  const notice = $("signin-message");
  const fail = (message) => {
    notice.textContent = message;
    notice.hidden = false;
    notice.classList.add("error");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    input.select();
  };
  if (!key) {
    fail("Enter your API key.");
    return;
  }
  const button = $("signin-submit");
  button.disabled = true;
  button.textContent = "Signing in…";
  try {
    // Any authenticated call tells us whether the key is good; folders is the cheapest.
    const probe = new Api(key);
    await probe.folders();
    saveKey(key, $("signin-remember").checked);
    input.value = "";
    input.removeAttribute("aria-invalid");
    startApp(key);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      fail("That API key was not accepted. Check that you pasted all of it, or make a new one with “pictor keys create”.");
    } else {
      fail(err instanceof ApiError ? err.message : "Signing in failed. Try again.");
    }
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signOut(message = "You are signed out.", isError = false) {
  forgetKey();
  state.api = null;
  state.abort?.abort();
  state.generation += 1;
  uploads.abortAll();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  resetGrid();
  state.folder = null;
  state.search = "";
  $("search-input").value = "";
  rememberView();
  $("folder-list").replaceChildren();
  showSignIn(message, isError);
}

function startApp(key) {
  state.api = new Api(key, () => {
    if (state.api) signOut("Your API key is no longer accepted. Sign in again.", true);
  });
  $("signin-view").hidden = true;
  $("app-view").hidden = false;
  const view = viewFromUrl();
  state.folder = view.folder;
  state.search = view.search;
  $("search-input").value = view.search;
  state.folders = [];
  renderHeading();
  renderFolders();
  refreshFolders();
  reload();
  $("search-input").focus();
}

// ---------------------------------------------------------------------------------------------
// Folders

async function refreshFolders() {
  const api = state.api;
  if (!api) return;
  let folders = [];
  try {
    const body = await api.folders();
    folders = Array.isArray(body?.folders) ? body.folders : [];
  } catch (err) {
    if (err?.status === 401) return;
  }
  if (api !== state.api) return; // signed out (or in as someone else) meanwhile
  state.folders = folders;
  renderFolders();
}

function renderFolders() {
  const list = $("folder-list");
  const hadFocus = list.contains(document.activeElement) ? document.activeElement.dataset.folder : undefined;
  const entries = [{ name: null, label: "All images", glyph: ICONS.images }];
  for (const name of state.folders) entries.push({ name, label: name, glyph: ICONS.folder });
  // Keep the selected folder visible even when it has just been emptied.
  if (state.folder !== null && !state.folders.includes(state.folder)) {
    entries.push({ name: state.folder, label: state.folder, glyph: ICONS.folder });
  }
  list.replaceChildren(
    ...entries.map(({ name, label, glyph }) => {
      const current = name === state.folder;
      const button = h(
        "button",
        {
          type: "button",
          class: "folder-button",
          "aria-current": current ? "true" : null,
          "data-folder": name ?? "",
          on: { click: () => selectFolder(name) },
        },
        icon(glyph, 18),
        h("span", { class: "folder-name", text: label }),
      );
      return h("li", {}, button);
    }),
  );
  if (hadFocus !== undefined) {
    const again = [...list.querySelectorAll("button")].find((b) => b.dataset.folder === hadFocus);
    again?.focus();
  }
  const options = $("folder-options");
  options.replaceChildren(...state.folders.map((name) => h("option", { value: name })));
}

function selectFolder(name) {
  state.folder = name;
  rememberView({ push: true });
  renderFolders();
  renderHeading();
  reload();
}

function renderHeading() {
  const title = state.folder === null ? "All images" : state.folder;
  $("library-heading").textContent = title;
  document.title = `${title} · Pictor`;
}

// ---------------------------------------------------------------------------------------------
// The grid: pages are fetched by offset (the number of cards shown), so that our own uploads
// and deletes never make a page repeat or skip an image; ids already shown are never added again.

function resetGrid() {
  state.items = [];
  state.ids = new Set();
  state.total = 0;
  state.done = false;
  state.loading = false;
  state.minPage = 1;
  $("grid").replaceChildren();
  $("empty-state").hidden = true;
  $("load-error").hidden = true;
  $("load-more").hidden = true;
  $("library-count").textContent = "";
}

function reload() {
  state.abort?.abort();
  state.generation += 1;
  resetGrid();
  $("grid").setAttribute("aria-busy", "true");
  loadMore();
}

async function loadMore() {
  if (!state.api || state.loading || state.done) return;
  state.loading = true;
  const generation = state.generation;
  const abort = new AbortController();
  state.abort = abort;
  const page = Math.max(Math.floor(state.items.length / PAGE_SIZE) + 1, state.minPage);
  const loadButton = $("load-more");
  loadButton.disabled = true;
  loadButton.textContent = "Loading…";
  try {
    const body = await state.api.list(
      { folder: state.folder, search: state.search, page, pageSize: PAGE_SIZE },
      abort.signal,
    );
    if (generation !== state.generation) return;
    const images = Array.isArray(body?.images) ? body.images : [];
    state.total = Number(body?.total) || 0;
    const fresh = images.filter((image) => !state.ids.has(image.id));
    for (const image of fresh) {
      state.ids.add(image.id);
      state.items.push(image);
    }
    $("grid").append(...fresh.map(card));
    state.done = images.length === 0 || page * PAGE_SIZE >= state.total;
    // If someone else's uploads pushed every image of this page into what we have shown,
    // move on to the next page rather than asking for the same one again.
    state.minPage = fresh.length === 0 && !state.done ? page + 1 : 1;
    $("load-error").hidden = true;
  } catch (err) {
    if (generation !== state.generation || err?.name === "AbortError") return;
    if (err?.status === 401) return; // signOut already ran
    showLoadError(err instanceof ApiError ? err.message : "The images could not be loaded.");
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      loadButton.disabled = false;
      loadButton.textContent = "Load more images";
      $("grid").removeAttribute("aria-busy");
      renderListState();
      // Keep filling the screen while the end of the list is in view.
      if (!state.done && $("load-error").hidden && sentinelVisible()) queueMicrotask(loadMore);
    }
  }
}

function showLoadError(message) {
  const box = $("load-error");
  box.replaceChildren(
    h("span", { text: message }),
    " ",
    h("button", { type: "button", class: "link-button", text: "Try again", on: { click: () => {
      box.hidden = true;
      loadMore();
    } } }),
  );
  box.hidden = false;
}

function sentinelVisible() {
  const rect = $("sentinel").getBoundingClientRect();
  return rect.top < window.innerHeight + 600;
}

/** Count line, empty state and the load-more button, from the current state. */
function renderListState() {
  const shown = state.items.length;
  const count = $("library-count");
  const empty = $("empty-state");
  $("load-more").hidden = state.done || !state.api;

  if (shown === 0 && state.done) {
    count.textContent = state.search ? "No matches" : "No images";
    renderEmptyState();
    empty.hidden = false;
    return;
  }
  empty.hidden = true;
  const total = Math.max(state.total, shown);
  const noun = total === 1 ? "image" : "images";
  let text = `${formatNumber(total)} ${noun}`;
  if (state.search) text += ` matching “${state.search}”`;
  if (shown < total) text = `Showing ${formatNumber(shown)} of ${text}`;
  count.textContent = text;
}

function renderEmptyState() {
  const title = $("empty-title");
  const text = $("empty-text");
  const actions = $("empty-actions");
  const uploadButton = (label) =>
    h("button", { type: "button", class: "button primary", text: label, on: { click: openFilePicker } });
  if (state.search) {
    title.textContent = `No images match “${state.search}”`;
    text.textContent =
      state.folder === null
        ? "Search looks at filenames and alt text. Try fewer or different letters, or clear the search."
        : `Search looks at filenames and alt text in the folder “${state.folder}”. Try other words, or search all folders.`;
    const buttons = [h("button", { type: "button", class: "button", text: "Clear search", on: { click: clearSearch } })];
    if (state.folder !== null) {
      buttons.push(h("button", { type: "button", class: "button ghost", text: "Search all folders", on: { click: () => selectFolder(null) } }));
    }
    actions.replaceChildren(...buttons);
  } else if (state.folder !== null) {
    title.textContent = "This folder is empty";
    text.textContent = `Upload images into “${state.folder}”, or go back to all images.`;
    actions.replaceChildren(
      uploadButton("Upload into this folder"),
      h("button", { type: "button", class: "button ghost", text: "Show all images", on: { click: () => selectFolder(null) } }),
    );
  } else {
    title.textContent = "No images yet";
    text.textContent =
      "Drag images anywhere onto this page, or choose Upload images. JPEG, PNG, GIF and WebP files up to 10 MB each.";
    actions.replaceChildren(uploadButton("Upload images"));
  }
}

function clearSearch() {
  $("search-input").value = "";
  state.search = "";
  rememberView();
  reload();
  $("search-input").focus();
}

function thumbSize(image) {
  const w = Number(image.width) || THUMB_MAX;
  const hgt = Number(image.height) || THUMB_MAX;
  const scale = Math.min(1, THUMB_MAX / w, THUMB_MAX / hgt);
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(hgt * scale))];
}

function card(image) {
  const [tw, th] = thumbSize(image);
  const img = h("img", {
    src: localImageUrl(image.thumbnail_url),
    alt: "",
    width: tw,
    height: th,
    loading: "lazy",
    decoding: "async",
  });
  const meta = h(
    "span",
    { class: "card-meta" },
    h("span", { class: "card-name", text: image.filename }),
    h(
      "span",
      { class: "card-sub" },
      h("span", { class: "card-folder" + (image.folder ? "" : " muted") }, icon(ICONS.folder, 14), h("span", { text: image.folder || "No folder" })),
      image.alt_text ? null : h("span", { class: "badge warn", title: "This image has no alt text" }, icon(ICONS.warning, 13), h("span", { text: "No alt text" })),
    ),
  );
  const button = h(
    "button",
    {
      type: "button",
      class: "card-button",
      on: { click: () => openDetails(state.items.find((item) => item.id === image.id) || image, button) },
    },
    h("span", { class: "thumb" }, img),
    meta,
  );
  return h("li", { class: "card", "data-id": image.id }, button);
}

function replaceCard(image) {
  const index = state.items.findIndex((item) => item.id === image.id);
  if (index === -1) return;
  if (JSON.stringify(state.items[index]) === JSON.stringify(image)) return;
  state.items[index] = image;
  const old = findCard(image.id);
  if (!old) return;
  const hadFocus = old.contains(document.activeElement);
  const fresh = card(image);
  old.replaceWith(fresh);
  if (hadFocus) fresh.querySelector("button").focus();
}

function removeCard(id) {
  const index = state.items.findIndex((item) => item.id === id);
  if (index === -1) return null;
  state.items.splice(index, 1);
  state.ids.delete(id);
  state.total = Math.max(0, state.total - 1);
  const node = findCard(id);
  const next = node?.nextElementSibling || node?.previousElementSibling || null;
  node?.remove();
  renderListState();
  return next;
}

function findCard(id) {
  return [...$("grid").children].find((li) => li.dataset.id === id) || null;
}

/** Whether an image belongs in the list as currently filtered. */
function matchesView(image) {
  if (state.folder !== null && image.folder !== state.folder) return false;
  if (state.search) {
    const needle = state.search.toLocaleLowerCase();
    const hay = [image.filename || "", image.alt_text || ""];
    if (!hay.some((text) => text.toLocaleLowerCase().includes(needle))) return false;
  }
  return true;
}

/** A just-uploaded image goes to the top of the grid if it belongs to this view. */
function addUploaded(image) {
  if (!matchesView(image) || state.ids.has(image.id)) return;
  state.ids.add(image.id);
  state.items.unshift(image);
  state.total += 1;
  $("grid").prepend(card(image));
  renderListState();
}

// ---------------------------------------------------------------------------------------------
// Details dialog

const details = {
  image: null,
  opener: null,
};

async function openDetails(image, opener) {
  const id = image.id;
  details.opener = opener;
  fillDetails(image);
  $("details-status").textContent = "";
  $("copy-status").textContent = "";
  const dialog = $("details-dialog");
  if (!dialog.open) dialog.showModal();
  $("details-alt").focus();
  // The grid may be stale (another tab, another person): show the server's current state.
  try {
    const fresh = await state.api.get(id);
    if (details.image?.id === id && dialog.open) {
      fillDetails(fresh, { keepEdits: true });
      replaceCard(fresh);
    }
  } catch (err) {
    if (err?.status === 404 && details.image?.id === id) {
      dialog.close();
      removeCard(id);
      toast("That image has been deleted.");
    }
  }
}

function fillDetails(image, { keepEdits = false } = {}) {
  const previous = details.image;
  details.image = image;
  $("details-title").textContent = image.filename;

  const preview = $("details-image");
  const src = localImageUrl(image.url);
  if (preview.getAttribute("src") !== src) {
    preview.removeAttribute("src");
    preview.width = Number(image.width) || 0;
    preview.height = Number(image.height) || 0;
    preview.style.aspectRatio = `${preview.width} / ${preview.height}`;
    preview.src = src;
  }
  preview.alt = image.alt_text || `Preview of ${image.filename}`;

  const kind = String(image.mime_type || "").replace(/^image\//, "").toUpperCase();
  const facts = [
    ["Dimensions", `${formatNumber(image.width)} × ${formatNumber(image.height)} px`],
    ["Size", `${formatBytes(image.size_bytes)} (${formatNumber(image.size_bytes)} bytes)`],
    ["Type", `${kind} (${image.mime_type})`],
    ["Uploaded", timeElement(image.created_at)],
    ["Changed", timeElement(image.updated_at)],
    ["ID", h("code", { text: image.id }), "fact-wide"],
  ];
  $("details-facts").replaceChildren(
    ...facts.map(([term, value, extra]) =>
      h("div", { class: extra ? `fact ${extra}` : "fact" }, h("dt", { text: term }), h("dd", {}, value)),
    ),
  );

  const alt = $("details-alt");
  const folder = $("details-folder");
  // Don't throw away what the user is typing when fresh data arrives.
  const altEdited = keepEdits && previous && alt.value !== (previous.alt_text || "");
  const folderEdited = keepEdits && previous && folder.value !== (previous.folder || "");
  if (!altEdited) alt.value = image.alt_text || "";
  if (!folderEdited) folder.value = image.folder || "";

  $("details-url").value = image.url;
  $("details-open").href = localImageUrl(image.url);
}

async function onSaveDetails(event) {
  event.preventDefault();
  const image = details.image;
  if (!image) return;
  const status = $("details-status");
  const altText = $("details-alt").value.trim();
  const folder = $("details-folder").value.trim();
  const changes = {};
  if (altText !== (image.alt_text || "")) changes.alt_text = altText;
  if (folder !== (image.folder || "")) changes.folder = folder || null;
  if (Object.keys(changes).length === 0) {
    setStatus(status, "Nothing to save: no changes.", false);
    return;
  }
  const button = $("details-save");
  button.disabled = true;
  setStatus(status, "Saving…", false);
  try {
    const updated = await state.api.update(image.id, changes);
    fillDetails(updated);
    setStatus(status, "Saved.", false);
    if (matchesView(updated)) replaceCard(updated);
    else removeCard(updated.id);
    if ("folder" in changes) refreshFolders();
  } catch (err) {
    if (err?.status === 401) return;
    setStatus(status, err instanceof ApiError ? err.message : "Saving failed. Try again.", true);
  } finally {
    button.disabled = false;
  }
}

function setStatus(node, message, isError) {
  node.textContent = message;
  node.classList.toggle("error", Boolean(isError));
  node.classList.remove("pending");
}

async function onCopy(kind) {
  const image = details.image;
  if (!image) return;
  const status = $("copy-status");
  const text = kind === "url" ? image.url : imgTag(image);
  const ok = await copyText(text);
  if (!ok) {
    setStatus(status, "Could not copy. Select the URL above and copy it with your keyboard.", true);
    $("details-url").select();
    return;
  }
  let message = kind === "url" ? "Copied the public URL." : "Copied the <img> tag.";
  if (kind === "tag" && !image.alt_text) message += " Tip: this image has no alt text yet; add some and save first.";
  setStatus(status, message, false);
}

function onDeleteRequest() {
  const image = details.image;
  if (!image) return;
  $("confirm-name").textContent = `“${image.filename}” will be deleted.`;
  $("confirm-error").hidden = true;
  $("confirm-delete").disabled = false;
  $("confirm-dialog").showModal();
  $("confirm-cancel").focus();
}

async function onConfirmSubmit(event) {
  const choice = event.submitter?.value;
  if (choice !== "delete") return; // Cancel: let the dialog close itself
  event.preventDefault();
  const image = details.image;
  if (!image) return;
  const button = $("confirm-delete");
  button.disabled = true;
  try {
    await state.api.remove(image.id);
  } catch (err) {
    if (err?.status === 401) return;
    if (err?.status !== 404) {
      const box = $("confirm-error");
      box.textContent = err instanceof ApiError ? err.message : "Deleting failed. Try again.";
      box.hidden = false;
      button.disabled = false;
      return;
    }
  }
  $("confirm-dialog").close();
  details.opener = null;
  $("details-dialog").close();
  const next = removeCard(image.id);
  details.image = null;
  toast(`Deleted “${image.filename}”.`);
  refreshFolders();
  (next?.querySelector("button") || $("library")).focus();
}

// ---------------------------------------------------------------------------------------------
// Uploads

const uploads = {
  rows: [], // {file, state: "pending"|"uploading"|"done"|"failed", li, alt, progress, status, request}
  nextId: 0,

  pending() {
    return this.rows.filter((row) => row.state === "pending");
  },
  active() {
    return this.rows.filter((row) => row.state === "uploading");
  },
  abortAll() {
    for (const row of this.rows) row.request?.abort();
    this.rows = [];
    $("upload-list").replaceChildren();
  },
};

function openFilePicker() {
  $("file-input").click();
}

function addFiles(fileList) {
  const files = [...fileList];
  if (!state.api || files.length === 0) return;
  const dialog = $("upload-dialog");
  if (!dialog.open) {
    // A new batch: forget finished rows, default the folder to the one being viewed.
    if (uploads.active().length === 0) {
      for (const row of uploads.rows) {
        if (row.state !== "pending" && row.preview) URL.revokeObjectURL(row.preview);
      }
      uploads.rows = uploads.rows.filter((row) => row.state === "pending");
      $("upload-list").replaceChildren(...uploads.rows.map((row) => row.li));
      $("upload-folder").value = state.folder ?? "";
    }
    dialog.showModal();
  }
  let firstAlt = null;
  for (const file of files) {
    const row = uploadRow(file);
    uploads.rows.push(row);
    $("upload-list").append(row.li);
    firstAlt ||= row.alt;
  }
  renderUploadControls();
  firstAlt?.focus();
}

function uploadRow(file) {
  const id = `upload-${(uploads.nextId += 1)}`;
  const row = { file, state: "pending", request: null, preview: null };
  const looksLikeImage = /^image\/(jpeg|png|gif|webp)$/.test(file.type);
  if (looksLikeImage) row.preview = URL.createObjectURL(file);
  const thumb = row.preview
    ? h("img", { class: "upload-thumb", src: row.preview, alt: "", width: 56, height: 56 })
    : h("span", { class: "upload-thumb placeholder" }, icon(ICONS.images, 24));

  row.alt = h("input", {
    id: `${id}-alt`, type: "text", maxlength: 1000, placeholder: "Describe the image (alt text)",
    autocomplete: "off",
  });
  row.progress = h("progress", { max: 100, value: 0, "aria-label": `Upload progress of ${file.name}` });
  row.status = h("p", { class: "upload-status", id: `${id}-status` });
  row.remove = h("button", {
    type: "button", class: "icon-button", "aria-label": `Remove ${file.name} from the list`,
    on: { click: () => {
      if (row.state !== "pending") return;
      uploads.rows = uploads.rows.filter((r) => r !== row);
      if (row.preview) URL.revokeObjectURL(row.preview);
      row.li.remove();
      renderUploadControls();
    } },
  }, icon(ICONS.x, 18));

  row.li = h(
    "li",
    { class: "upload-row", "data-state": "pending", "data-name": file.name },
    thumb,
    h(
      "div",
      { class: "upload-main" },
      h("div", { class: "upload-title" },
        h("span", { class: "upload-name", text: file.name }),
        h("span", { class: "upload-size", text: formatBytes(file.size) }),
      ),
      h("label", { class: "visually-hidden", for: `${id}-alt`, text: `Alt text for ${file.name}` }),
      row.alt,
      row.progress,
      row.status,
    ),
    row.remove,
  );
  return row;
}

function renderUploadControls() {
  const pending = uploads.pending().length;
  const active = uploads.active().length;
  const start = $("upload-start");
  const finished = uploads.rows.length > 0 && pending === 0 && active === 0;
  start.disabled = pending === 0;
  start.hidden = finished;
  start.textContent = pending > 1 ? `Upload ${pending} images` : "Upload";
  // Once everything has gone up, closing is the thing left to do.
  $("upload-close").classList.toggle("primary", finished);
  $("upload-close").classList.toggle("ghost", !finished);
  const done = uploads.rows.filter((r) => r.state === "done").length;
  const failed = uploads.rows.filter((r) => r.state === "failed").length;
  let title = "Upload images";
  if (active > 0) title = `Uploading ${active + pending} of ${uploads.rows.length}…`;
  else if (done + failed > 0 && pending === 0) {
    title = failed ? `${done} uploaded, ${failed} failed` : `${done} uploaded`;
  }
  $("upload-title").textContent = title;
  $("upload-close").textContent = active > 0 ? "Hide" : "Close";
}

async function startUploads(event) {
  event.preventDefault();
  const queue = uploads.pending();
  if (queue.length === 0) return;
  const folder = $("upload-folder").value.trim();
  for (const row of queue) {
    row.state = "uploading";
    row.li.dataset.state = "uploading";
    row.alt.readOnly = true;
    row.remove.hidden = true;
    row.folder = folder;
    row.status.textContent = "Waiting…";
  }
  renderUploadControls();
  const workers = Array.from({ length: Math.min(UPLOAD_CONCURRENCY, queue.length) }, async () => {
    while (queue.length) await uploadOne(queue.shift());
  });
  await Promise.all(workers);
  refreshFolders();
  const dialog = $("upload-dialog");
  if (!dialog.open) {
    const failed = uploads.rows.filter((r) => r.state === "failed").length;
    toast(failed ? `Uploads finished; ${failed} failed. Open Upload images to see why.` : "Uploads finished.");
  } else {
    $("upload-close").focus();
  }
}

async function uploadOne(row) {
  if (!state.api || !uploads.rows.includes(row)) return;
  const setProgress = (fraction) => {
    const percent = Math.round(fraction * 100);
    row.progress.value = percent;
    row.status.textContent = `Uploading… ${percent}%`;
  };
  setProgress(0);
  const request = state.api.upload(row.file, { folder: row.folder, altText: row.alt.value.trim() }, setProgress);
  row.request = request;
  try {
    const image = await request.promise;
    row.state = "done";
    row.li.dataset.state = "done";
    row.progress.value = 100;
    row.image = image;
    row.status.replaceChildren(
      icon(ICONS.check, 14),
      h("span", { text: image.folder ? `Uploaded to “${image.folder}”.` : "Uploaded." }),
      " ",
      h("button", { type: "button", class: "link-button", text: "Edit details", on: { click: () => {
        $("upload-dialog").close();
        const opener = findCard(image.id)?.querySelector("button") || null;
        openDetails(state.items.find((item) => item.id === image.id) || image, opener);
      } } }),
    );
    addUploaded(image);
  } catch (err) {
    row.state = "failed";
    row.li.dataset.state = "failed";
    row.status.replaceChildren(
      icon(ICONS.warning, 14),
      h("span", { text: err instanceof ApiError ? err.message : "The upload failed." }),
    );
    row.status.setAttribute("role", "alert");
  } finally {
    row.request = null;
    renderUploadControls();
  }
}

function closeUploadDialog() {
  $("upload-dialog").close();
}

// Drag and drop anywhere on the page.
function setUpDragAndDrop() {
  const overlay = $("drop-overlay");
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!state.api || !hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    overlay.hidden = false;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (!state.api || !hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) {
      overlay.hidden = true;
      document.body.classList.remove("dragging");
    }
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault(); // never let the browser navigate to a dropped file
    depth = 0;
    overlay.hidden = true;
    document.body.classList.remove("dragging");
    if (state.api) addFiles(event.dataTransfer.files);
  });
}

// ---------------------------------------------------------------------------------------------
// Toasts

function toast(message) {
  const box = $("toasts");
  const node = h("p", { class: "toast", text: message });
  box.append(node);
  setTimeout(() => node.remove(), 6000);
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("signin-form").addEventListener("submit", onSignIn);
  window.addEventListener("popstate", applyViewFromUrl);
  window.addEventListener("hashchange", applyViewFromUrl);
  $("signout-button").addEventListener("click", () => signOut());

  const search = $("search-input");
  const runSearch = debounce(() => {
    const value = search.value.trim();
    if (value === state.search) return;
    state.search = value;
    rememberView();
    reload();
  }, SEARCH_DELAY_MS);
  search.addEventListener("input", runSearch);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch.cancel();
    const value = search.value.trim();
    if (value !== state.search) {
      state.search = value;
      rememberView();
      reload();
    }
  });

  $("load-more").addEventListener("click", loadMore);
  if ("IntersectionObserver" in window) {
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) loadMore();
      },
      { rootMargin: "600px 0px" },
    );
    observer.observe($("sentinel"));
  }

  $("upload-button").addEventListener("click", openFilePicker);
  $("upload-add").addEventListener("click", openFilePicker);
  $("file-input").addEventListener("change", (event) => {
    const input = event.target;
    addFiles(input.files);
    input.value = ""; // choosing the same file again must fire change again
  });
  $("upload-form").addEventListener("submit", startUploads);
  for (const button of document.querySelectorAll("#upload-dialog [data-close]")) {
    button.addEventListener("click", closeUploadDialog);
  }
  setUpDragAndDrop();

  const detailsDialog = $("details-dialog");
  $("details-form").addEventListener("submit", onSaveDetails);
  $("details-form").addEventListener("input", () => {
    const image = details.image;
    if (!image) return;
    const dirty =
      $("details-alt").value.trim() !== (image.alt_text || "") ||
      $("details-folder").value.trim() !== (image.folder || "");
    setStatus($("details-status"), dirty ? "Unsaved changes" : "", false);
    $("details-status").classList.toggle("pending", dirty);
  });
  $("copy-url").addEventListener("click", () => onCopy("url"));
  $("copy-tag").addEventListener("click", () => onCopy("tag"));
  $("details-url").addEventListener("focus", (event) => event.target.select());
  $("details-delete").addEventListener("click", onDeleteRequest);
  detailsDialog.querySelector("[data-close]").addEventListener("click", () => detailsDialog.close());
  detailsDialog.addEventListener("close", () => {
    // Back to the card that opened the dialog (it may have been redrawn meanwhile).
    const opener = details.opener;
    details.opener = null;
    if (!opener) return;
    const target = opener.isConnected ? opener : findCard(details.image?.id)?.querySelector("button");
    target?.focus();
  });
  $("confirm-dialog").querySelector("form").addEventListener("submit", onConfirmSubmit);

  // Clicking the backdrop of a dialog closes it (the dialog's own box covers its content).
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target !== dialog) return;
      const r = dialog.getBoundingClientRect();
      const inside = event.clientX >= r.left && event.clientX <= r.right && event.clientY >= r.top && event.clientY <= r.bottom;
      if (!inside) dialog.close();
    });
  }
}

function main() {
  wire();
  const key = savedKey();
  if (key) startApp(key);
  else showSignIn();
}

main();
