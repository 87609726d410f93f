// The Pictor gallery: sign in, browse, select, upload, edit, copy, move, delete (with undo).
// Plain ES modules, no build step. API data only ever reaches the page through textContent,
// attributes set one by one, or .value: never through innerHTML.

import { Api, ApiError, MAX_UPLOAD_BYTES } from "./api.js";
import {
  h, icon, ICONS, formatBytes, formatNumber, timeElement, timeAgo, debounce, localImageUrl,
  copyText, srcsetFor, variantUrl, emailImgTag, webImgTag, markdownImage, sniffImageType, sha256Hex,
} from "./dom.js";

const PAGE_SIZE = 100;
const SEARCH_DELAY_MS = 250;
const MAX_SEARCH = 200; // the server's limit on `search`
const UPLOAD_CONCURRENCY = 3;
const BULK_CONCURRENCY = 4; // PATCH/DELETE requests in flight during a bulk action
const STATS_CHECK_LIMIT = 500; // at most this many images' fetch statistics per confirmation
const UNDO_MS = 10_000;
const BUFFER_ROWS = 3; // rows rendered above and below the viewport
const KEY_NAME = "pictor.apiKey";
const SCROLL_NAME = "pictor.scroll";
const SORTS = ["newest", "oldest", "name", "size"];

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// State

const state = {
  api: null,
  folder: null, // exact folder filter, or null for all images
  search: "",
  sort: "newest",
  missingAlt: false,
  folders: [], // [{name, image_count}]
  libraryCount: null,
  items: [], // ImageResponse, in display order: a dense prefix of the view
  ids: new Set(),
  total: 0,
  done: false,
  loading: false,
  generation: 0,
  minPage: 1,
  abort: null,
  loadFailed: false,
  selected: new Set(),
  anchor: null, // index where a Shift-range starts
  focusIndex: 0, // the grid's one tab stop (roving tabindex)
  restoreIndex: null, // after a reload: the first card that was in view
  announced: "",
};

// Images deleted in the UI whose DELETE is held back for the undo window: id -> image.
const held = new Map();

// ---------------------------------------------------------------------------------------------
// The view in the URL: folder, search, sort, filter and the open image live in the fragment
// (#folder=...&search=...&image=...), so Back, reload, bookmarks and shared links work.
// The key never goes there.

function viewFromUrl() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const sort = params.get("sort");
  return {
    folder: params.get("folder") || null,
    search: (params.get("search") || "").trim().slice(0, MAX_SEARCH),
    sort: SORTS.includes(sort) ? sort : "newest",
    missingAlt: params.get("missing_alt") === "1",
    image: params.get("image") || null,
  };
}

function urlForView(image = details.image && $("details-dialog").open ? details.image.id : null) {
  const params = new URLSearchParams();
  if (state.folder !== null) params.set("folder", state.folder);
  if (state.search) params.set("search", state.search);
  if (state.sort !== "newest") params.set("sort", state.sort);
  if (state.missingAlt) params.set("missing_alt", "1");
  if (image) params.set("image", image);
  const fragment = params.toString();
  return window.location.pathname + window.location.search + (fragment ? `#${fragment}` : "");
}

const currentUrl = () => window.location.pathname + window.location.search + window.location.hash;

// A new folder is a new history entry; typing a search only replaces the current one.
function rememberView({ push = false, image, marker = null } = {}) {
  const url = image === undefined ? urlForView() : urlForView(image);
  if (url === currentUrl() && !marker) return;
  if (push) window.history.pushState(marker, "", url);
  else window.history.replaceState(marker ?? window.history.state, "", url);
}

const viewKey = () => JSON.stringify([state.folder, state.search, state.sort, state.missingAlt]);

async function applyViewFromUrl() {
  if (!state.api) return;
  const view = viewFromUrl();
  const dialog = $("details-dialog");
  // Back (or Forward) with the details open: the dialog follows the history, and is never left
  // standing over a grid that changed under it.
  if (dialog.open && view.image !== details.image?.id) {
    if (!(await confirmDiscardDetails())) {
      window.history.pushState({ details: true }, "", urlForView(details.image.id));
      return;
    }
    closeDetailsNow();
  }
  const changed =
    view.folder !== state.folder || view.search !== state.search ||
    view.sort !== state.sort || view.missingAlt !== state.missingAlt;
  if (changed) {
    state.folder = view.folder;
    state.search = view.search;
    state.sort = view.sort;
    state.missingAlt = view.missingAlt;
    syncControls();
    renderFolders();
    renderHeading();
    reload();
  }
  if (view.image && !dialog.open) openDetailsById(view.image);
}

function syncControls() {
  $("search-input").value = state.search;
  $("sort-select").value = state.sort;
  $("missing-alt").setAttribute("aria-pressed", String(state.missingAlt));
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
  // Deletes the user confirmed and did not undo are sent now, while the key is still known.
  if (state.api && !isError) commitAllHeld();
  forgetKey();
  state.api = null;
  state.abort?.abort();
  state.generation += 1;
  uploads.abortAll();
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  resetGrid();
  clearSelection();
  state.folder = null;
  state.search = "";
  state.sort = "newest";
  state.missingAlt = false;
  syncControls();
  rememberView({ image: null });
  $("folder-list").replaceChildren();
  $("toasts").replaceChildren();
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
  state.sort = view.sort;
  state.missingAlt = view.missingAlt;
  syncControls();
  state.folders = [];
  state.restoreIndex = savedScroll();
  renderHeading();
  renderFolders();
  refreshFolders();
  reload({ keepRestore: true });
  if (view.image) openDetailsById(view.image);
  else $("search-input").focus();
}

// ---------------------------------------------------------------------------------------------
// Folders: the sidebar with counts; create, rename, merge, delete.

async function refreshFolders() {
  const api = state.api;
  if (!api) return;
  try {
    const body = await api.folderCounts();
    if (api !== state.api) return; // signed out (or in as someone else) meanwhile
    state.folders = Array.isArray(body?.folders) ? body.folders : [];
    state.libraryCount = Number(body?.image_count ?? NaN);
    $("folder-error").hidden = true;
  } catch (err) {
    if (err?.status === 401 || api !== state.api) return;
    // Keep the folders we had: one failed request must not empty the sidebar.
    const box = $("folder-error");
    box.replaceChildren(
      h("span", { text: "The folder list could not be refreshed." }),
      " ",
      h("button", { type: "button", class: "link-button", text: "Retry", on: { click: refreshFolders } }),
    );
    box.hidden = false;
  }
  renderFolders();
  refreshMissingAltCount();
}

const folderNames = () => state.folders.map((f) => f.name);

function renderFolders() {
  const list = $("folder-list");
  const hadFocus = list.contains(document.activeElement) ? document.activeElement.dataset.folder : undefined;
  // Images whose DELETE waits for the undo window are not counted any more.
  const heldIn = (name) => [...held.values()].filter((image) => name === null || image.folder === name).length;
  const entries = [{ name: null, label: "All images", glyph: ICONS.images, count: state.libraryCount - heldIn(null) }];
  for (const f of state.folders) {
    entries.push({ name: f.name, label: f.name, glyph: ICONS.folder, count: Math.max(0, f.image_count - heldIn(f.name)) });
  }
  // Keep the selected folder visible even when it has just been emptied.
  if (state.folder !== null && !folderNames().includes(state.folder)) {
    entries.push({ name: state.folder, label: state.folder, glyph: ICONS.folder, count: 0 });
  }
  list.replaceChildren(
    ...entries.map(({ name, label, glyph, count }) => {
      const current = name === state.folder;
      const known = Number.isFinite(count);
      const button = h(
        "button",
        {
          type: "button",
          class: "folder-button",
          "aria-current": current ? "true" : null,
          "data-folder": name ?? "",
          title: label,
          on: { click: () => selectFolder(name) },
        },
        icon(glyph, 18),
        h("span", { class: "folder-name", text: label }),
        known
          ? h("span", { class: "folder-count" }, formatNumber(count), h("span", { class: "visually-hidden", text: count === 1 ? " image" : " images" }))
          : null,
      );
      return h("li", {}, button);
    }),
  );
  if (hadFocus !== undefined) {
    const again = [...list.querySelectorAll("button")].find((b) => b.dataset.folder === hadFocus);
    again?.focus();
  }
  $("folder-options").replaceChildren(...folderNames().map((name) => h("option", { value: name })));
  $("folder-actions").hidden = state.folder === null;
}

function selectFolder(name) {
  if (name === state.folder) return;
  state.folder = name;
  clearSelection();
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

const folderDialog = { mode: "create", from: null };

function openFolderDialog(mode) {
  folderDialog.mode = mode;
  folderDialog.from = mode === "rename" ? state.folder : null;
  const input = $("folder-name");
  input.value = mode === "rename" ? state.folder : "";
  $("folder-dialog-title").textContent = mode === "rename" ? `Rename “${state.folder}”` : "New folder";
  $("folder-dialog-error").hidden = true;
  updateFolderDialogHint();
  $("folder-dialog").showModal();
  input.focus();
  input.select();
}

function updateFolderDialogHint() {
  const name = $("folder-name").value.trim();
  const hint = $("folder-name-help");
  const submit = $("folder-submit");
  const target = state.folders.find((f) => f.name === name);
  if (folderDialog.mode === "create") {
    hint.textContent = "An empty folder stays in the list until you delete it. Upload or move images into it.";
    submit.textContent = "Create folder";
  } else if (target && name !== folderDialog.from) {
    const from = state.folders.find((f) => f.name === folderDialog.from)?.image_count ?? 0;
    hint.textContent = `“${name}” already exists. Its ${formatNumber(target.image_count)} and these ${formatNumber(from)} images will be together in “${name}”.`;
    submit.textContent = "Merge folders";
  } else {
    hint.textContent = "Every image in the folder moves with it.";
    submit.textContent = "Rename folder";
  }
}

async function onFolderSubmit(event) {
  event.preventDefault();
  const name = $("folder-name").value.trim();
  const box = $("folder-dialog-error");
  if (!name) {
    box.textContent = "Give the folder a name.";
    box.hidden = false;
    $("folder-name").focus();
    return;
  }
  const submit = $("folder-submit");
  submit.disabled = true;
  try {
    if (folderDialog.mode === "create") {
      await state.api.createFolder(name);
      toast(`Created the folder “${name}”.`);
      $("folder-dialog").close();
      await refreshFolders();
      selectFolder(name);
    } else {
      const from = folderDialog.from;
      if (name !== from) {
        const body = await state.api.renameFolder(from, name);
        toast(body?.merged ? `Merged “${from}” into “${name}”.` : `Renamed “${from}” to “${name}”.`);
      }
      $("folder-dialog").close();
      await refreshFolders();
      state.folder = null; // force the view to change to the new name
      selectFolder(name);
      window.history.replaceState(null, "", urlForView());
    }
  } catch (err) {
    if (err?.status === 401) return;
    box.textContent = err instanceof ApiError ? err.message : "That did not work. Try again.";
    box.hidden = false;
  } finally {
    submit.disabled = false;
  }
}

async function onDeleteFolder() {
  const name = state.folder;
  if (name === null) return;
  const count = state.folders.find((f) => f.name === name)?.image_count ?? 0;
  const ok = await ask({
    title: `Delete the folder “${name}”?`,
    text: count
      ? `Its ${formatNumber(count)} ${count === 1 ? "image stays" : "images stay"} in the library, without a folder. Their public URLs do not change.`
      : "The folder is empty. No image is deleted.",
    ok: "Delete folder",
    cancel: "Cancel",
    danger: true,
  });
  if (!ok) return;
  try {
    await state.api.deleteFolder(name);
    toast(`Deleted the folder “${name}”; its images are kept.`);
  } catch (err) {
    if (err?.status === 401) return;
    toast(err instanceof ApiError ? err.message : "The folder could not be deleted.");
    return;
  }
  await refreshFolders();
  selectFolder(null);
}

// ---------------------------------------------------------------------------------------------
// Loading: pages are fetched by offset (the number of cards held), so that our own uploads and
// deletes never make a page repeat or skip an image; ids already held are never added again.

function resetGrid() {
  state.items = [];
  state.ids = new Set();
  state.total = 0;
  state.done = false;
  state.loading = false;
  state.minPage = 1;
  state.loadFailed = false;
  state.focusIndex = 0;
  grid.first = 0;
  grid.last = -1;
  grid.nodes.clear();
  $("grid").replaceChildren();
  $("grid").style.paddingTop = "";
  $("grid").style.paddingBottom = "";
  $("empty-state").hidden = true;
  $("load-error").hidden = true;
  $("library-count").textContent = "";
}

function reload({ keepRestore = false } = {}) {
  state.abort?.abort();
  state.generation += 1;
  if (!keepRestore) state.restoreIndex = null;
  resetGrid();
  $("grid").setAttribute("aria-busy", "true");
  refreshMissingAltCount();
  loadMore();
}

function listQuery(page, pageSize = PAGE_SIZE) {
  return {
    folder: state.folder, search: state.search, sort: state.sort, missingAlt: state.missingAlt,
    page, pageSize,
  };
}

async function loadMore() {
  if (!state.api || state.loading || state.done) return;
  state.loading = true;
  const generation = state.generation;
  const abort = new AbortController();
  state.abort = abort;
  const page = Math.max(Math.floor(state.items.length / PAGE_SIZE) + 1, state.minPage);
  try {
    const body = await state.api.list(listQuery(page), abort.signal);
    if (generation !== state.generation) return;
    const images = Array.isArray(body?.images) ? body.images : [];
    state.total = Math.max(0, (Number(body?.total) || 0) - held.size);
    const fresh = images.filter((image) => !state.ids.has(image.id) && !held.has(image.id));
    for (const image of fresh) {
      state.ids.add(image.id);
      state.items.push(image);
    }
    state.done = images.length === 0 || page * PAGE_SIZE >= Number(body?.total || 0);
    // If someone else's uploads pushed every image of this page into what we hold,
    // move on to the next page rather than asking for the same one again.
    state.minPage = fresh.length === 0 && !state.done ? page + 1 : 1;
    state.loadFailed = false;
    $("load-error").hidden = true;
  } catch (err) {
    if (generation !== state.generation || err?.name === "AbortError") return;
    if (err?.status === 401) return; // signOut already ran
    state.loadFailed = true;
    showLoadError(err);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      $("grid").removeAttribute("aria-busy");
      renderListState();
      if (!state.loadFailed) {
        if (state.restoreIndex !== null) continueRestore();
        renderGrid();
      }
    }
  }
}

/** Load pages until `index` is held (or the view ends); resolves with whether it is. */
async function loadUpTo(index) {
  while (state.api && index >= state.items.length && !state.done && !state.loadFailed) {
    if (state.loading) await new Promise((resolve) => setTimeout(resolve, 20));
    else await loadMore();
  }
  return index < state.items.length;
}

function showLoadError(err) {
  const box = $("load-error");
  const invalid = err instanceof ApiError && err.status === 400;
  if (invalid) {
    // A request the server refuses would be refused again: no "Try again" that resends it.
    box.replaceChildren(
      h("span", { text: "The library cannot show this view: " }),
      h("span", { class: "error-detail", text: err.message }),
      " ",
      h("button", { type: "button", class: "link-button", text: "Show all images", on: { click: () => {
        state.search = "";
        state.folder = null;
        syncControls();
        rememberView({ push: true });
        renderFolders();
        renderHeading();
        reload();
      } } }),
    );
  } else {
    box.replaceChildren(
      h("span", { text: err instanceof ApiError ? err.message : "The images could not be loaded." }),
      " ",
      h("button", { type: "button", class: "link-button", text: "Try again", on: { click: () => {
        box.hidden = true;
        state.loadFailed = false;
        loadMore();
      } } }),
    );
  }
  box.hidden = false;
}

/** Count line, empty state and the announcement, from the current state. */
function renderListState() {
  const shown = state.items.length;
  const count = $("library-count");
  const empty = $("empty-state");
  const total = Math.max(state.total, shown);
  let text;
  if (shown === 0 && state.done) {
    text = state.search || state.missingAlt ? "No matches" : "No images";
    renderEmptyState();
    empty.hidden = false;
  } else {
    empty.hidden = true;
    if (!state.done && shown === 0) return;
    text = `${formatNumber(total)} ${total === 1 ? "image" : "images"}`;
    if (state.missingAlt) text += " without alt text";
    if (state.search) text += ` matching “${state.search}”`;
  }
  count.textContent = text;
  announce(text);
}

/** Say a count once when it changes (not for every page that arrives). */
function announce(text) {
  if (text === state.announced) return;
  state.announced = text;
  $("announcer").textContent = text;
}

function renderEmptyState() {
  const title = $("empty-title");
  const text = $("empty-text");
  const actions = $("empty-actions");
  const uploadButton = (label) =>
    h("button", { type: "button", class: "button primary", text: label, on: { click: openFilePicker } });
  if (state.missingAlt && !state.search) {
    title.textContent = "Every image has alt text";
    text.textContent = "Nothing to fix here. Mail clients that block images will show each image's description.";
    actions.replaceChildren(h("button", { type: "button", class: "button", text: "Show all images", on: { click: () => setMissingAlt(false) } }));
  } else if (state.search) {
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
    text.textContent = `Upload images into “${state.folder}”, move images here from another folder, or go back to all images.`;
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

function setMissingAlt(on) {
  state.missingAlt = on;
  clearSelection();
  syncControls();
  rememberView({ push: true });
  reload();
}

async function refreshMissingAltCount() {
  const api = state.api;
  if (!api) return;
  const folder = state.folder;
  try {
    const body = await api.list({ folder, missingAlt: true, page: 1, pageSize: 1 });
    if (api !== state.api || folder !== state.folder) return;
    const n = Math.max(0, Number(body?.total) || 0);
    $("missing-alt").textContent = `Missing alt text (${formatNumber(n)})`;
  } catch {
    $("missing-alt").textContent = "Missing alt text";
  }
}

// ---------------------------------------------------------------------------------------------
// The grid, virtualised: only the rows in and near the viewport are in the DOM; the list's
// padding stands in for the rest, so the scrollbar covers the whole view.

const grid = {
  first: 0, // index of the first rendered card
  last: -1, // index of the last rendered card
  cols: 1,
  rowHeight: 0,
  nodes: new Map(), // id -> <li>, for the cards rendered now
  frame: 0,
};

function measure() {
  const ul = $("grid");
  const style = getComputedStyle(ul);
  const cols = style.gridTemplateColumns.split(" ").filter((x) => x && x !== "none").length || 1;
  const gap = parseFloat(style.rowGap) || 0;
  let height = ul.firstElementChild?.getBoundingClientRect().height || 0;
  if (!height && state.items.length) {
    const probe = card(state.items[0], 0);
    ul.append(probe);
    height = probe.getBoundingClientRect().height;
    probe.remove();
  }
  grid.cols = cols;
  grid.rowHeight = (height || 300) + gap; // 300: not laid out yet (hidden)
}

function scheduleRender() {
  if (grid.frame) return;
  grid.frame = requestAnimationFrame(() => {
    grid.frame = 0;
    renderGrid();
  });
}

/** Pixels at the top of the viewport that sticky bars cover (when they are stuck). */
function stickyHeight() {
  const topbar = $("topbar");
  const bar = $("bulk-bar");
  let height = getComputedStyle(topbar).position === "sticky" ? topbar.offsetHeight : 0;
  if (!bar.hidden && getComputedStyle(bar).position === "sticky") height += bar.offsetHeight;
  return height;
}

function renderGrid() {
  const ul = $("grid");
  const n = state.items.length;
  if (n === 0) {
    ul.replaceChildren();
    ul.style.paddingTop = "";
    ul.style.paddingBottom = "";
    return;
  }
  measure();
  const { cols, rowHeight } = grid;
  const extent = Math.max(n, state.done ? n : state.total);
  const rows = Math.ceil(extent / cols);
  const ulTop = ul.getBoundingClientRect().top;
  const viewTop = -ulTop; // px of the list above the viewport's top
  const firstRow = Math.max(0, Math.floor(viewTop / rowHeight) - BUFFER_ROWS);
  const lastRow = Math.min(rows - 1, Math.ceil((viewTop + window.innerHeight) / rowHeight) + BUFFER_ROWS);
  const first = Math.min(firstRow * cols, Math.max(0, n - 1) - ((Math.max(0, n - 1)) % cols));
  const last = Math.min(n - 1, (lastRow + 1) * cols - 1);
  const firstShownRow = Math.floor(first / cols);
  const lastShownRow = Math.floor(last / cols);
  ul.style.paddingTop = `${firstShownRow * rowHeight}px`;
  ul.style.paddingBottom = `${Math.max(0, rows - 1 - lastShownRow) * rowHeight}px`;

  // The tab stop follows the viewport when the focused card scrolls away.
  const active = document.activeElement;
  const focusedCard = active?.closest?.("#grid .card") || null;
  if (!focusedCard && (state.focusIndex < first || state.focusIndex > last || state.focusIndex >= n)) {
    state.focusIndex = Math.min(n - 1, Math.max(first, Math.floor(Math.max(0, viewTop) / rowHeight) * cols));
  }

  if (first !== grid.first || last !== grid.last || ul.childElementCount !== grid.last - grid.first + 1) {
    const node = (i) => {
      const image = state.items[i];
      let li = grid.nodes.get(image.id);
      if (!li || Number(li.dataset.index) !== i) li = card(image, i);
      return li;
    };
    const keep = new Map();
    const overlaps = ul.childElementCount === grid.last - grid.first + 1 && first <= grid.last && last >= grid.first;
    if (overlaps) {
      // Move only the edges, so that the cards that stay (the focused one among them) are
      // never taken out of the document.
      for (const li of [...ul.children]) {
        const i = Number(li.dataset.index);
        if (i < first || i > last) li.remove();
        else keep.set(li.dataset.id, li);
      }
      const before = [];
      for (let i = first; i < grid.first; i += 1) before.push(node(i));
      ul.prepend(...before);
      const after = [];
      for (let i = grid.last + 1; i <= last; i += 1) after.push(node(i));
      ul.append(...after);
      for (const li of [...before, ...after]) keep.set(li.dataset.id, li);
    } else {
      const nodes = [];
      for (let i = first; i <= last; i += 1) nodes.push(node(i));
      for (const li of nodes) keep.set(li.dataset.id, li);
      const focusedId = focusedCard?.dataset.id;
      ul.replaceChildren(...nodes);
      if (focusedId && keep.has(focusedId)) keep.get(focusedId).querySelector(".card-button").focus({ preventScroll: true });
    }
    grid.nodes = keep;
    grid.first = first;
    grid.last = last;
  }
  syncTabStops();
  // Near the end of what is held (half a page ahead): fetch the next page.
  if (!state.done && !state.loading && !state.loadFailed && (lastRow + 1) * cols > n - PAGE_SIZE / 2) loadMore();
  saveScrollSoon();
}

function syncTabStops() {
  for (const li of $("grid").children) {
    const index = Number(li.dataset.index);
    li.querySelector(".card-button").tabIndex = index === state.focusIndex ? 0 : -1;
    const selected = state.selected.has(li.dataset.id);
    li.classList.toggle("selected", selected);
    li.querySelector(".card-check").checked = selected;
  }
}

/** Rebuild the rendered cards (after the items changed), keeping focus where it was. */
function redrawGrid() {
  grid.first = 0;
  grid.last = -1;
  grid.nodes.clear();
  renderGrid();
}

function thumbBox(image) {
  const w = Number(image.width) || 320;
  const hgt = Number(image.height) || 320;
  const scale = Math.min(1, 320 / w, 320 / hgt);
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(hgt * scale))];
}

function card(image, index) {
  const [tw, th] = thumbBox(image);
  const img = h("img", {
    src: localImageUrl(variantUrl(image, 320)),
    srcset: srcsetFor(image, 800, localImageUrl),
    // Never wider than the image itself: a small image is not blown up by srcset's density.
    sizes: `(max-width: 720px) min(45vw, ${tw}px), ${Math.min(240, tw)}px`,
    alt: image.alt_text || "",
    width: tw,
    height: th,
    loading: "lazy",
    decoding: "async",
    on: { error: fallBackToThumbnail },
  });
  const kind = String(image.mime_type || "").replace(/^image\//, "").toUpperCase();
  const meta = h(
    "span",
    { class: "card-meta" },
    h("span", { class: "card-name", text: image.filename }),
    h(
      "span",
      { class: "card-sub" },
      h("span", { class: "card-folder" + (image.folder ? "" : " muted") }, icon(ICONS.folder, 14), h("span", { text: image.folder || "No folder" })),
      image.alt_text ? null : h("span", { class: "badge warn" }, icon(ICONS.warning, 13), h("span", { text: "No alt text" })),
    ),
    h("span", { class: "card-facts", text: `${formatNumber(image.width)} × ${formatNumber(image.height)} · ${formatBytes(image.size_bytes)} · ${kind}` }),
  );
  const button = h(
    "button",
    { type: "button", class: "card-button", tabindex: "-1" },
    h("span", { class: "thumb" }, img),
    meta,
  );
  const check = h("input", {
    type: "checkbox",
    class: "card-check",
    tabindex: "-1",
    "aria-label": `Select ${image.filename}`,
  });
  // The full name, for when the card cuts it short: shown on hover and keyboard focus.
  const tip = h("span", { class: "card-tip", "aria-hidden": "true", text: image.filename });
  return h("li", {
    class: "card",
    "data-id": image.id,
    "data-index": index,
    "aria-posinset": index + 1,
    "aria-setsize": Math.max(state.total, state.items.length),
  }, button, check, tip);
}

/** Show the thumbnail in `img` instead. It goes in srcset with its true width and a matching
 *  sizes: Chromium keeps the density of a failed srcset candidate if only src changes. */
function thumbnailInstead(img, image) {
  const [tw] = thumbBox(image);
  const url = localImageUrl(image.thumbnail_url);
  img.dataset.fallback = "1";
  img.sizes = `${tw}px`;
  img.srcset = `${url} ${tw}w`;
  img.src = url;
  return img;
}

function fallBackToThumbnail(event) {
  // A server without resized variants (or one that failed): its 320-pixel thumbnail instead.
  const img = event.currentTarget;
  const li = img.closest(".card");
  const image = state.items.find((item) => item.id === li?.dataset.id);
  if (!image || img.dataset.fallback) return;
  thumbnailInstead(img, image);
}

const indexOfId = (id) => state.items.findIndex((item) => item.id === id);

function findCard(id) {
  return grid.nodes.get(id) || null;
}

function replaceItem(image) {
  const index = indexOfId(image.id);
  if (index === -1) return;
  if (JSON.stringify(state.items[index]) === JSON.stringify(image)) return;
  state.items[index] = image;
  const old = grid.nodes.get(image.id);
  if (!old) return;
  const fresh = card(image, index);
  const hadFocus = old.contains(document.activeElement);
  old.replaceWith(fresh);
  grid.nodes.set(image.id, fresh);
  syncTabStops();
  if (hadFocus) fresh.querySelector(".card-button").focus({ preventScroll: true });
}

/** Take images out of the view. Returns the index where the first one was. */
function removeItems(ids) {
  let first = -1;
  for (const id of ids) {
    const index = indexOfId(id);
    if (index === -1) continue;
    if (first === -1 || index < first) first = index;
    state.items.splice(index, 1);
    state.ids.delete(id);
    state.selected.delete(id);
    state.total = Math.max(0, state.total - 1);
  }
  if (first === -1) return -1;
  const focusWasInGrid = $("grid").contains(document.activeElement);
  state.focusIndex = Math.min(first, Math.max(0, state.items.length - 1));
  redrawGrid();
  renderListState();
  renderSelection();
  if (focusWasInGrid || document.activeElement === document.body) focusCardAt(state.focusIndex);
  return first;
}

/** Focus the card at `index` (or the nearest one), or the library when none is left. */
function focusCardAt(index) {
  if (state.items.length === 0) {
    $("library").focus();
    return;
  }
  moveFocus(Math.min(index, state.items.length - 1));
}

/** Whether an image belongs in the list as currently filtered. */
function matchesView(image) {
  if (state.folder !== null && image.folder !== state.folder) return false;
  if (state.missingAlt && image.alt_text) return false;
  if (state.search) {
    const needle = state.search.toLocaleLowerCase();
    const hay = [image.filename || "", image.alt_text || ""];
    if (!hay.some((text) => text.toLocaleLowerCase().includes(needle))) return false;
  }
  return true;
}

const COMPARE = {
  newest: () => -1, // a new upload is the newest
  oldest: () => 1,
  name: (a, b) => a.filename.localeCompare(b.filename, undefined, { sensitivity: "base" }),
  size: (a, b) => b.size_bytes - a.size_bytes,
};

/** A just-uploaded image goes where the sort puts it, if it belongs to this view. */
function addUploaded(image) {
  if (!matchesView(image) || state.ids.has(image.id)) return;
  const compare = COMPARE[state.sort];
  let index = state.items.findIndex((item) => compare(image, item) < 0);
  if (index === -1) {
    if (!state.done) return; // beyond what is held: it will come with its page
    index = state.items.length;
  }
  state.ids.add(image.id);
  state.items.splice(index, 0, image);
  state.total += 1;
  if (state.focusIndex >= index && state.items.length > 1) state.focusIndex += 1;
  redrawGrid();
  renderListState();
}

// Keeping the place: the first card in view, per view, in this tab's sessionStorage.

function firstVisibleIndex() {
  const ul = $("grid");
  if (!grid.rowHeight || state.items.length === 0) return 0;
  const ulTop = ul.getBoundingClientRect().top;
  const row = Math.max(0, Math.floor((stickyHeight() - ulTop) / grid.rowHeight + 0.5));
  return Math.min(state.items.length - 1, row * grid.cols);
}

const saveScrollSoon = debounce(() => {
  if (!state.api || state.restoreIndex !== null || state.items.length === 0) return;
  try {
    sessionStorage.setItem(SCROLL_NAME, JSON.stringify({ view: viewKey(), index: firstVisibleIndex() }));
  } catch {
    // No storage: a reload starts at the top.
  }
}, 150);

function savedScroll() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SCROLL_NAME) || "null");
    return saved && saved.view === viewKey() && saved.index > 0 ? Number(saved.index) : null;
  } catch {
    return null;
  }
}

function continueRestore() {
  const index = state.restoreIndex;
  if (index >= state.items.length && !state.done) {
    queueMicrotask(loadMore); // keep loading until the card is held
    return;
  }
  state.restoreIndex = null;
  scrollToIndex(Math.min(index, state.items.length - 1), "top");
}

function scrollToIndex(index, where = "nearest") {
  measure();
  const ul = $("grid");
  const row = Math.floor(index / grid.cols);
  const ulTopDoc = ul.getBoundingClientRect().top + window.scrollY;
  const top = ulTopDoc + row * grid.rowHeight;
  const bottom = top + grid.rowHeight;
  const covered = stickyHeight() + 8;
  if (where === "top") window.scrollTo(0, top - covered);
  else if (top < window.scrollY + covered) window.scrollTo(0, top - covered);
  else if (bottom > window.scrollY + window.innerHeight) window.scrollTo(0, bottom - window.innerHeight + 8);
  renderGrid();
}

// ---------------------------------------------------------------------------------------------
// Keyboard and pointer on the grid: one tab stop, arrow keys, selection.

function moveFocus(index, { extend = false } = {}) {
  const n = state.items.length;
  if (n === 0) return;
  index = Math.max(0, Math.min(index, n - 1));
  if (extend) selectRange(state.anchor ?? state.focusIndex, index);
  state.focusIndex = index;
  scrollToIndex(index);
  syncTabStops();
  findCard(state.items[index].id)?.querySelector(".card-button").focus({ preventScroll: true });
}

function onGridKeyDown(event) {
  const li = event.target.closest(".card");
  if (!li) return;
  const index = Number(li.dataset.index);
  const cols = grid.cols || 1;
  const pageRows = Math.max(1, Math.floor((window.innerHeight - stickyHeight()) / (grid.rowHeight || 1)));
  const targets = {
    ArrowRight: index + 1,
    ArrowLeft: index - 1,
    ArrowDown: index + cols,
    ArrowUp: index - cols,
    PageDown: index + cols * pageRows,
    PageUp: index - cols * pageRows,
    Home: event.ctrlKey ? 0 : index - (index % cols),
    End: event.ctrlKey ? state.items.length - 1 : Math.min(state.items.length - 1, index - (index % cols) + cols - 1),
  };
  if (event.key in targets) {
    event.preventDefault();
    const target = targets[event.key];
    if (target < 0) return;
    if (target >= state.items.length && !state.done) {
      loadUpTo(target).then(() => moveFocus(target, { extend: event.shiftKey }));
      return;
    }
    if (!event.shiftKey) state.anchor = null;
    else if (state.anchor === null) state.anchor = index;
    moveFocus(target, { extend: event.shiftKey });
  } else if (event.key === " ") {
    event.preventDefault(); // Space selects; Enter opens
    toggleSelected(state.items[index].id, index);
  }
}

function onGridClick(event) {
  const li = event.target.closest(".card");
  if (!li) return;
  const index = Number(li.dataset.index);
  const image = state.items[index];
  if (!image) return;
  state.focusIndex = index;
  if (event.target.classList.contains("card-check")) {
    if (event.shiftKey && state.anchor !== null) {
      selectRange(state.anchor, index);
    } else {
      toggleSelected(image.id, index, event.target.checked);
    }
    return;
  }
  if (!event.target.closest(".card-button")) return;
  const keyboard = event.detail === 0; // Enter or Space on the button
  if (event.shiftKey && !keyboard) {
    selectRange(state.anchor ?? index, index);
  } else if ((event.ctrlKey || event.metaKey) && !keyboard) {
    toggleSelected(image.id, index);
  } else if (state.selected.size > 0 && !keyboard) {
    toggleSelected(image.id, index); // while selecting, a click adds or removes
  } else {
    openDetails(image, li.querySelector(".card-button"));
  }
  syncTabStops();
}

function toggleSelected(id, index, on = !state.selected.has(id)) {
  if (on) state.selected.add(id);
  else state.selected.delete(id);
  state.anchor = index;
  renderSelection();
}

function selectRange(from, to) {
  const [a, b] = from <= to ? [from, to] : [to, from];
  for (let i = a; i <= b; i += 1) if (state.items[i]) state.selected.add(state.items[i].id);
  if (state.anchor === null) state.anchor = from;
  renderSelection();
}

async function selectAll() {
  const button = $("select-all");
  if (!state.done) {
    button.disabled = true;
    button.textContent = "Selecting…";
    await loadUpTo(Number.MAX_SAFE_INTEGER);
    button.disabled = false;
  }
  for (const image of state.items) state.selected.add(image.id);
  renderSelection();
}

function clearSelection() {
  state.selected.clear();
  state.anchor = null;
  renderSelection();
}

function renderSelection() {
  const n = state.selected.size;
  const bar = $("bulk-bar");
  const wasHidden = bar.hidden;
  bar.hidden = n === 0;
  $("bulk-count").textContent = `${formatNumber(n)} selected`;
  $("bulk-move").textContent = n === 1 ? "Move 1 image to a folder…" : `Move ${formatNumber(n)} images to a folder…`;
  $("bulk-delete").textContent = n === 1 ? "Delete 1 image…" : `Delete ${formatNumber(n)} images…`;
  $("select-all").textContent = "Select all";
  document.body.classList.toggle("selecting", n > 0);
  syncTabStops();
  if (wasHidden !== bar.hidden) updateStickyPadding();
}

function selectedImages() {
  return state.items.filter((image) => state.selected.has(image.id));
}

function updateStickyPadding() {
  const root = document.documentElement.style;
  root.setProperty("--topbar-height", `${$("topbar").offsetHeight}px`);
  root.setProperty("--sticky-height", `${Math.ceil(stickyHeight())}px`);
}

// ---------------------------------------------------------------------------------------------
// Details dialog

const details = {
  image: null,
  opener: null,
  index: -1,
  pushed: false, // whether opening it added a history entry (Back closes it)
  stats: null,
};

function openDetails(image, opener) {
  details.opener = opener;
  const dialog = $("details-dialog");
  showDetails(image);
  if (!dialog.open) {
    dialog.showModal();
    window.history.pushState({ details: true }, "", urlForView(image.id));
    details.pushed = true;
  }
  $("details-alt").focus();
}

/** A shared link (#image=...): open that image, wherever it is in the library. */
async function openDetailsById(id) {
  let image = state.items.find((item) => item.id === id);
  try {
    image = await state.api.get(id);
  } catch (err) {
    if (err?.status === 401) return;
    rememberView({ image: null });
    toast(err?.status === 404 ? "That image is not in the library (any more)." : "That image could not be opened.");
    return;
  }
  if (!state.api) return;
  details.opener = null;
  showDetails(image);
  const dialog = $("details-dialog");
  if (!dialog.open) dialog.showModal();
  details.pushed = false;
  rememberView({ image: id });
  $("details-alt").focus();
}

function showDetails(image) {
  const id = image.id;
  fillDetails(image);
  details.index = indexOfId(id);
  $("details-status").textContent = "";
  $("details-status").classList.remove("pending");
  $("copy-status").textContent = "";
  renderDetailsNav();
  loadStats(id);
  // The grid may be stale (another tab, another person): show the server's current state.
  state.api.get(id).then(
    (fresh) => {
      if (details.image?.id === id && $("details-dialog").open) {
        fillDetails(fresh, { keepEdits: true });
        replaceItem(fresh);
      }
    },
    (err) => {
      if (err?.status === 404 && details.image?.id === id) {
        closeDetailsNow();
        removeItems([id]);
        toast("That image has been deleted.");
      }
    },
  );
}

function renderDetailsNav() {
  const index = details.index;
  const total = Math.max(state.total, state.items.length);
  $("details-prev").disabled = index <= 0;
  $("details-next").disabled = index === -1 || (index >= state.items.length - 1 && state.done);
  $("details-position").textContent = index === -1 ? "" : `${formatNumber(index + 1)} of ${formatNumber(total)}`;
}

async function stepDetails(delta) {
  if (details.index === -1) return;
  const target = details.index + delta;
  if (target < 0) return;
  if (!(await confirmDiscardDetails())) return;
  if (target >= state.items.length && !(await loadUpTo(target))) return;
  const image = state.items[target];
  if (!image) return;
  state.focusIndex = target;
  showDetails(image);
  details.opener = null;
  window.history.replaceState(window.history.state, "", urlForView(image.id));
}

function detailsDirty() {
  const image = details.image;
  if (!image || !$("details-dialog").open) return false;
  return (
    $("details-alt").value.trim() !== (image.alt_text || "") ||
    $("details-folder").value.trim() !== (image.folder || "")
  );
}

async function confirmDiscardDetails() {
  if (!detailsDirty()) return true;
  return ask({
    title: "Discard your changes?",
    text: `The alt text or folder you changed for “${details.image.filename}” has not been saved.`,
    ok: "Discard changes",
    cancel: "Keep editing",
    danger: true,
  });
}

/** Close, asking first when there are unsaved edits. */
async function requestCloseDetails() {
  if (!(await confirmDiscardDetails())) {
    $("details-alt").focus();
    return;
  }
  closeDetailsNow();
}

function closeDetailsNow() {
  const dialog = $("details-dialog");
  if (dialog.open) dialog.close();
}

function onDetailsClosed() {
  if (!state.api) return;
  // The URL stops naming the image: Back again if opening it added the entry.
  if (viewFromUrl().image) {
    if (details.pushed && window.history.state?.details) window.history.back(); // its popstate finds the dialog closed
    else rememberView({ image: null });
  }
  details.pushed = false;
  // Back to the card that opened the dialog, or to the one now in its place, never <body>.
  // The close event comes a task after close(): a key pressed in between ("/" to search) may
  // already have moved focus on, and that choice stands.
  const opener = details.opener;
  details.opener = null;
  const active = document.activeElement;
  const dialog = $("details-dialog");
  if (active instanceof HTMLElement && active !== document.body && !dialog.contains(active) && !active.closest("#grid")) return;
  if (opener?.isConnected) {
    opener.focus();
    return;
  }
  const index = details.image ? indexOfId(details.image.id) : -1;
  focusCardAt(index !== -1 ? index : Math.max(0, Math.min(state.focusIndex, state.items.length - 1)));
}

function fillDetails(image, { keepEdits = false } = {}) {
  const previous = details.image;
  details.image = image;
  $("details-title").textContent = image.filename;

  const preview = $("details-image");
  const src = localImageUrl(variantUrl(image, 800));
  if (preview.dataset.id !== image.id) {
    preview.dataset.id = image.id;
    delete preview.dataset.fallback;
    preview.removeAttribute("src");
    preview.removeAttribute("srcset");
    preview.width = Number(image.width) || 0;
    preview.height = Number(image.height) || 0;
    preview.style.aspectRatio = `${preview.width} / ${preview.height}`;
    const own = Number(image.width) || 520;
    preview.sizes = `(max-width: 820px) min(90vw, ${own}px), ${Math.min(520, own)}px`;
    preview.srcset = srcsetFor(image, 2000, localImageUrl);
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
  $("details-facts").replaceChildren(...facts.map(fact));

  const alt = $("details-alt");
  const folder = $("details-folder");
  // Don't throw away what the user is typing when fresh data arrives.
  const same = previous && previous.id === image.id;
  const altEdited = keepEdits && same && alt.value !== (previous.alt_text || "");
  const folderEdited = keepEdits && same && folder.value !== (previous.folder || "");
  if (!altEdited) alt.value = image.alt_text || "";
  if (!folderEdited) folder.value = image.folder || "";

  $("details-url").value = image.url;
  $("details-open").href = localImageUrl(image.url);
}

function fact([term, value, extra]) {
  return h("div", { class: extra ? `fact ${extra}` : "fact" }, h("dt", { text: term }), h("dd", {}, value));
}

function onDetailsPreviewError(event) {
  const preview = event.currentTarget;
  const image = details.image;
  if (!image || preview.dataset.fallback || preview.dataset.id !== image.id) return;
  thumbnailInstead(preview, image);
}

async function loadStats(id) {
  const section = $("details-stats");
  section.hidden = true;
  details.stats = null;
  const stats = await state.api.stats(id);
  if (!stats || details.image?.id !== id) return;
  details.stats = stats;
  const f = stats.fetches || {};
  const rows = [
    ["Last 30 days", formatNumber(f.last_30_days ?? 0)],
    ["All time", formatNumber(f.total ?? 0)],
    ["Last fetched", f.last_fetched_at ? h("span", {}, timeAgo(f.last_fetched_at)) : "Never"],
  ];
  const clients = Object.entries(f.by_client || {}).sort((a, b) => b[1] - a[1]).slice(0, 4);
  if (clients.length) rows.push(["By client", clients.map(([c, n]) => `${c} ${formatNumber(n)}`).join(", "), "fact-wide"]);
  $("details-stats-list").replaceChildren(...rows.map(fact));
  section.hidden = false;
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
    setStatus(status, matchesView(updated) ? "Saved." : "Saved. It has left this view.", false);
    if (matchesView(updated)) replaceItem(updated);
    else {
      removeItems([updated.id]);
      details.index = -1;
      renderDetailsNav();
    }
    refreshFolders();
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

const COPIES = {
  url: { text: (image) => image.url, done: "Copied the public URL." },
  email: { text: emailImgTag, done: "Copied the <img> tag for email (600 pixels wide, sharp on high-density screens)." },
  web: { text: webImgTag, done: "Copied the HTML for the web, with srcset." },
  markdown: { text: markdownImage, done: "Copied the Markdown." },
  link: {
    text: (image) => `${window.location.origin}${window.location.pathname}#image=${encodeURIComponent(image.id)}`,
    done: "Copied a link to this image in the gallery (for people signed in to this library).",
  },
};

async function onCopy(kind) {
  const image = details.image;
  if (!image) return;
  const status = $("copy-status");
  const ok = await copyText(COPIES[kind].text(image));
  if (!ok) {
    setStatus(status, "Could not copy. Select the URL above and copy it with your keyboard.", true);
    $("details-url").select();
    return;
  }
  let message = COPIES[kind].done;
  if (kind !== "url" && kind !== "link" && !image.alt_text) message += " Tip: this image has no alt text yet; add some and save first.";
  setStatus(status, message, false);
}

// ---------------------------------------------------------------------------------------------
// Deleting, one or many: one confirmation (with how often the images were fetched lately),
// then a toast with Undo. The DELETE requests wait for the undo window to pass; a page closed
// meanwhile sends none.

const confirmState = { images: [] };

async function requestDelete(images) {
  if (images.length === 0) return;
  confirmState.images = images;
  const one = images.length === 1;
  $("confirm-title").textContent = one ? "Delete this image?" : `Delete ${formatNumber(images.length)} images?`;
  $("confirm-name").textContent = one
    ? `“${images[0].filename}” will be deleted.`
    : `${formatNumber(images.length)} images will be deleted, among them “${images[0].filename}”.`;
  $("confirm-warning").replaceChildren(
    one ? "Emails that were already sent with this image will show a " : "Emails that were already sent with these images will show a ",
    h("strong", { text: "broken image" }),
    one ? " from now on: its public URL will answer “410 Gone” for ever." : " from now on: their public URLs will answer “410 Gone” for ever.",
  );
  $("confirm-delete").textContent = one ? "Delete image" : `Delete ${formatNumber(images.length)} images`;
  $("confirm-error").hidden = true;
  $("confirm-delete").disabled = false;
  const statsLine = $("confirm-stats");
  statsLine.hidden = true;
  $("confirm-dialog").showModal();
  $("confirm-cancel").focus();
  const text = await fetchSummary(images);
  if (text && confirmState.images === images && $("confirm-dialog").open) {
    statsLine.textContent = text;
    statsLine.hidden = false;
  }
}

/** "Fetched 1,204 times in the last 30 days, last 3 minutes ago: ..."; null without stats. */
async function fetchSummary(images) {
  const checked = images.slice(0, STATS_CHECK_LIMIT);
  const results = await pool(checked, 6, (image) => state.api.stats(image.id));
  const stats = results.filter((r) => r.ok && r.value).map((r) => r.value.fetches || {});
  if (stats.length === 0) return null; // no statistics on this server: say nothing more
  const recent = stats.filter((f) => (f.last_30_days || 0) > 0);
  const fetches = recent.reduce((sum, f) => sum + (f.last_30_days || 0), 0);
  const last = stats.map((f) => f.last_fetched_at).filter(Boolean).sort().pop();
  const times = (n) => `${formatNumber(n)} ${n === 1 ? "time" : "times"}`;
  if (images.length === 1) {
    if (!fetches) return last ? `Not fetched in the last 30 days (last ${timeAgo(last)}).` : "Never fetched: no email shows it yet.";
    return `Fetched ${times(fetches)} in the last 30 days, last ${timeAgo(last)}: emails that show it will show a broken image.`;
  }
  const of = checked.length < images.length ? ` of the first ${formatNumber(checked.length)} checked` : "";
  if (!recent.length) return `None of them${of} was fetched in the last 30 days.`;
  return (
    `${formatNumber(recent.length)}${of} ${recent.length === 1 ? "was" : "were"} fetched in the last 30 days ` +
    `(${times(fetches)} in all, last ${timeAgo(last)}): emails that show them will show a broken image.`
  );
}

function onConfirmSubmit(event) {
  const choice = event.submitter?.value;
  if (choice !== "delete") return; // Cancel: let the dialog close itself
  event.preventDefault();
  const images = confirmState.images;
  confirmState.images = [];
  $("confirm-dialog").close();
  if ($("details-dialog").open) {
    details.opener = null;
    closeDetailsNow();
  }
  holdDeletes(images);
}

function holdDeletes(images) {
  const placed = images.map((image) => [indexOfId(image.id), image]).filter(([i]) => i !== -1).sort((a, b) => a[0] - b[0]);
  for (const image of images) held.set(image.id, image);
  removeItems(images.map((image) => image.id));
  const label = images.length === 1 ? `Deleted “${images[0].filename}”.` : `Deleted ${formatNumber(images.length)} images.`;
  const batch = { images, placed, timer: 0, toast: null };
  batch.toast = toast(label, {
    action: { label: "Undo", onClick: () => undoDeletes(batch) },
    duration: UNDO_MS,
  });
  batch.timer = setTimeout(() => commitDeletes(batch), UNDO_MS);
  batches.add(batch);
  renderFolders();
}

const batches = new Set();

function undoDeletes(batch) {
  if (!batches.has(batch)) return;
  clearTimeout(batch.timer);
  batches.delete(batch);
  batch.toast?.remove();
  for (const image of batch.images) held.delete(image.id);
  renderFolders();
  for (const [index, image] of batch.placed) {
    if (state.ids.has(image.id) || !matchesView(image)) continue;
    state.items.splice(Math.min(index, state.items.length), 0, image);
    state.ids.add(image.id);
    state.total += 1;
  }
  redrawGrid();
  renderListState();
  const n = batch.images.length;
  toast(n === 1 ? `Kept “${batch.images[0].filename}”.` : `Kept ${formatNumber(n)} images.`);
  if (batch.placed.length) focusCardAt(batch.placed[0][0]);
}

function commitAllHeld() {
  for (const batch of [...batches]) {
    clearTimeout(batch.timer);
    commitDeletes(batch);
  }
}

async function commitDeletes(batch) {
  if (!batches.has(batch)) return;
  batches.delete(batch);
  batch.toast?.remove();
  const api = state.api;
  if (!api) return;
  const n = batch.images.length;
  const progress = n > 1 ? toast(`Deleting 0 of ${formatNumber(n)}…`, { duration: 0 }) : null;
  let done = 0;
  const results = await pool(batch.images, BULK_CONCURRENCY, async (image) => {
    try {
      await api.remove(image.id);
    } catch (err) {
      if (err?.status !== 404) throw err; // already gone: that is what was asked
    } finally {
      done += 1;
      if (progress) progress.querySelector(".toast-text").textContent = `Deleting ${formatNumber(done)} of ${formatNumber(n)}…`;
    }
  });
  progress?.remove();
  for (const image of batch.images) held.delete(image.id);
  const failed = results.map((r, i) => [r, batch.images[i]]).filter(([r]) => !r.ok);
  if (failed.length) {
    const [first, image] = failed[0];
    toast(
      `${formatNumber(failed.length)} of ${formatNumber(n)} could not be deleted (“${image.filename}”: ${first.error?.message || "failed"}). They are back in the library.`,
      { duration: 12_000 },
    );
    for (const [, img] of failed) if (matchesView(img) && !state.ids.has(img.id)) addBack(img);
  }
  if (state.api === api) refreshFolders();
}

function addBack(image) {
  state.ids.add(image.id);
  state.items.unshift(image);
  state.total += 1;
  redrawGrid();
  renderListState();
}

/** Run `fn` over `items` with at most `limit` at once; results as {ok, value|error}, in order. */
async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      try {
        results[i] = { ok: true, value: await fn(items[i]) };
      } catch (error) {
        results[i] = { ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

// ---------------------------------------------------------------------------------------------
// Moving the selection to a folder: PATCH each, a few at a time, with progress and failures.

const move = { images: [], running: false };

function openMoveDialog(images = selectedImages()) {
  if (images.length === 0) return;
  move.images = images;
  $("move-title").textContent = images.length === 1 ? "Move 1 image to a folder" : `Move ${formatNumber(images.length)} images to a folder`;
  $("move-folder").value = state.folder ?? "";
  $("move-progress-row").hidden = true;
  $("move-failures").hidden = true;
  $("move-failures").replaceChildren();
  $("move-submit").textContent = "Move";
  $("move-submit").disabled = false;
  $("move-dialog").showModal();
  $("move-folder").focus();
  $("move-folder").select();
}

async function onMoveSubmit(event) {
  event.preventDefault();
  if (move.running) return;
  const folder = $("move-folder").value.trim() || null;
  const images = move.images;
  move.running = true;
  const n = images.length;
  const bar = $("move-progress");
  const status = $("move-status");
  $("move-progress-row").hidden = false;
  $("move-failures").hidden = true;
  $("move-submit").disabled = true;
  let done = 0;
  const show = () => {
    bar.value = Math.round((done / n) * 100);
    status.textContent = `Moved ${formatNumber(done)} of ${formatNumber(n)}…`;
  };
  show();
  const api = state.api;
  const results = await pool(images, BULK_CONCURRENCY, async (image) => {
    try {
      return await api.update(image.id, { folder });
    } finally {
      done += 1;
      show();
    }
  });
  move.running = false;
  if (api !== state.api) return;
  const moved = results.filter((r) => r.ok).map((r) => r.value);
  const gone = [];
  for (const image of moved) {
    state.selected.delete(image.id);
    if (matchesView(image)) replaceItem(image);
    else gone.push(image.id);
  }
  const failed = results.map((r, i) => [r, images[i]]).filter(([r]) => !r.ok);
  for (const [r, image] of failed) if (r.error?.status === 404) gone.push(image.id);
  removeItems(gone);
  renderSelection();
  refreshFolders();
  const where = folder ? `“${folder}”` : "no folder";
  if (failed.length === 0) {
    $("move-dialog").close();
    toast(moved.length === 1 ? `Moved 1 image to ${where}.` : `Moved ${formatNumber(moved.length)} images to ${where}.`);
    return;
  }
  status.textContent = `Moved ${formatNumber(moved.length)} of ${formatNumber(n)} to ${where}; ${formatNumber(failed.length)} could not be moved:`;
  status.classList.add("error");
  $("move-failures").replaceChildren(
    ...failed.map(([r, image]) => h("li", {}, h("strong", { text: image.filename }), `: ${failureReason(r.error)}`)),
  );
  $("move-failures").hidden = false;
  move.images = failed.filter(([r]) => r.error?.status !== 404).map(([, image]) => image);
  $("move-submit").textContent = move.images.length ? `Retry ${formatNumber(move.images.length)} failed` : "Move";
  $("move-submit").disabled = move.images.length === 0;
}

function failureReason(error) {
  if (error?.status === 404) return "it is no longer in the library (deleted meanwhile).";
  return error instanceof ApiError ? error.message : "it failed.";
}

// ---------------------------------------------------------------------------------------------
// Uploads: files are checked here first (type from the bytes, size, emptiness) so that nothing
// doomed is sent; a failed row keeps its alt text and offers Retry and Remove.

const uploads = {
  rows: [], // {file, state: "pending"|"uploading"|"done"|"failed"|"refused", li, alt, ...}
  nextId: 0,

  withState(s) {
    return this.rows.filter((row) => row.state === s);
  },
  abortAll() {
    for (const row of this.rows) row.request?.abort();
    this.rows = [];
    $("upload-list").replaceChildren();
  },
};

function openFilePicker() {
  if (!state.api) return;
  $("file-input").click();
}

function addFiles(fileList) {
  const files = [...fileList];
  if (!state.api || files.length === 0) return;
  const dialog = $("upload-dialog");
  if (!dialog.open) {
    // A new batch: forget finished rows, keep the ones waiting or failed, default the folder.
    if (uploads.withState("uploading").length === 0) {
      for (const row of uploads.rows) {
        if (row.state === "done" && row.preview) URL.revokeObjectURL(row.preview);
      }
      uploads.rows = uploads.rows.filter((row) => row.state === "pending" || row.state === "failed");
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
    row.checked = checkFile(row);
  }
  renderUploadControls();
  firstAlt?.focus();
}

/** Refuse what the server would refuse, with the reason, before a byte is sent. */
async function checkFile(row) {
  const { file } = row;
  let reason = "";
  if (file.size === 0) reason = `“${file.name}” is empty (0 bytes). Choose the file again, or another one.`;
  else if (file.size > MAX_UPLOAD_BYTES) {
    const size = file.size < 11 * 1024 * 1024 ? `${formatNumber(file.size)} bytes` : formatBytes(file.size);
    reason = `“${file.name}” is ${size}; the limit is 10 MB (10,485,760 bytes) a file. Make it smaller, or export it as JPEG or WebP.`;
  } else {
    let type = null;
    try {
      type = await sniffImageType(file);
    } catch {
      reason = `“${file.name}” could not be read. Choose it again.`;
    }
    if (!reason && !type) {
      const said = file.type ? ` (it is ${file.type})` : "";
      reason = `“${file.name}” is not a JPEG, PNG, GIF or WebP image${said}. Only those can be uploaded.`;
    }
  }
  if (reason) {
    setRowState(row, "refused");
    row.status.replaceChildren(icon(ICONS.warning, 14), h("span", { text: reason }));
    row.status.setAttribute("role", "alert");
    renderUploadControls();
    return;
  }
  checkDuplicate(row);
}

async function checkDuplicate(row) {
  let hex = null;
  try {
    hex = await sha256Hex(row.file);
  } catch {
    return;
  }
  if (!hex || !state.api || row.state === "refused") return;
  let matches = [];
  try {
    const body = await state.api.bySha256(hex);
    matches = (body?.images || []).filter((image) => image.sha256 === hex);
  } catch {
    return; // a duplicate check that failed says nothing
  }
  if (matches.length === 0 || !uploads.rows.includes(row)) return;
  const first = matches[0];
  const where = first.folder ? ` in “${first.folder}”` : "";
  const more = matches.length > 1 ? ` (and ${matches.length - 1} more)` : "";
  row.duplicate.replaceChildren(
    icon(ICONS.warning, 14),
    h("span", { text: `Already in the library as “${first.filename}”${where}${more}. Uploading it again makes a second image.` }),
    " ",
    h("button", { type: "button", class: "link-button", text: "Open it", on: { click: () => {
      $("upload-dialog").close();
      openDetails(first, null);
    } } }),
  );
  row.duplicate.hidden = false;
}

function setRowState(row, value) {
  row.state = value;
  row.li.dataset.state = value;
  const editable = value === "pending" || value === "failed";
  row.alt.readOnly = !editable;
  row.remove.hidden = value === "uploading" || value === "done";
  row.retry.hidden = value !== "failed";
}

function uploadRow(file) {
  const id = `upload-${(uploads.nextId += 1)}`;
  const row = { file, state: "pending", request: null, preview: null };
  const looksLikeImage = /^image\/(jpeg|png|gif|webp)$/.test(file.type) && file.size > 0 && file.size <= MAX_UPLOAD_BYTES;
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
  row.duplicate = h("p", { class: "upload-duplicate", hidden: true });
  row.retry = h("button", {
    type: "button", class: "button small", hidden: true, text: "Retry",
    "aria-label": `Retry ${file.name}`,
    on: { click: () => retryRows([row]) },
  });
  row.remove = h("button", {
    type: "button", class: "icon-button", "aria-label": `Remove ${file.name} from the list`,
    on: { click: () => {
      if (row.state === "uploading" || row.state === "done") return;
      const next = row.li.nextElementSibling || row.li.previousElementSibling;
      uploads.rows = uploads.rows.filter((r) => r !== row);
      if (row.preview) URL.revokeObjectURL(row.preview);
      row.li.remove();
      renderUploadControls();
      (next?.querySelector("input, button") || $("upload-add")).focus();
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
        h("span", { class: "upload-name", text: file.name, title: file.name }),
        h("span", { class: "upload-size", text: formatBytes(file.size) }),
      ),
      h("label", { class: "visually-hidden", for: `${id}-alt`, text: `Alt text for ${file.name}` }),
      row.alt,
      row.progress,
      row.status,
      row.duplicate,
    ),
    h("div", { class: "upload-actions" }, row.retry, row.remove),
  );
  return row;
}

function renderUploadControls() {
  const pending = uploads.withState("pending").length;
  const active = uploads.withState("uploading").length;
  const done = uploads.withState("done").length;
  const failed = uploads.withState("failed").length;
  const refused = uploads.withState("refused").length;
  const start = $("upload-start");
  const finished = uploads.rows.length > 0 && pending === 0 && active === 0;
  start.disabled = pending === 0;
  start.hidden = finished;
  start.textContent = pending > 1 ? `Upload ${pending} images` : "Upload";
  $("upload-retry-all").hidden = failed === 0 || active > 0;
  $("upload-retry-all").textContent = failed > 1 ? `Retry all ${failed} failed` : "Retry failed";
  // Once everything has gone up, closing is the thing left to do.
  $("upload-close").classList.toggle("primary", finished && failed === 0);
  $("upload-close").classList.toggle("ghost", !(finished && failed === 0));
  let title = "Upload images";
  if (active > 0) title = `Uploading ${active + pending} of ${uploads.rows.length - refused}…`;
  else if (done + failed > 0 && pending === 0) {
    title = failed ? `${done} uploaded, ${failed} failed` : `${done} uploaded`;
  }
  if (refused && active === 0) title += refused === 1 ? " · 1 file refused" : ` · ${refused} files refused`;
  $("upload-title").textContent = title;
  $("upload-close").textContent = active > 0 ? "Hide" : "Close";
}

function startUploads(event) {
  event.preventDefault();
  runUploads(uploads.withState("pending"));
}

function retryRows(rows) {
  for (const row of rows) {
    setRowState(row, "pending");
    row.status.replaceChildren();
    row.status.removeAttribute("role");
  }
  runUploads(rows);
}

async function runUploads(rows) {
  await Promise.all(rows.map((row) => row.checked));
  const queue = rows.filter((row) => row.state === "pending");
  if (queue.length === 0) return;
  const folder = $("upload-folder").value.trim();
  for (const row of queue) {
    setRowState(row, "uploading");
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
  const failed = uploads.withState("failed").length;
  if (!dialog.open) {
    toast(failed ? `Uploads finished; ${failed} failed. Open Upload images to retry them.` : "Uploads finished.");
  } else if (failed) {
    $("upload-retry-all").focus();
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
    setRowState(row, "done");
    row.progress.value = 100;
    row.image = image;
    row.duplicate.hidden = true;
    row.status.removeAttribute("role");
    row.status.replaceChildren(
      icon(ICONS.check, 14),
      h("span", { text: image.folder ? `Uploaded to “${image.folder}”.` : "Uploaded." }),
      " ",
      h("button", { type: "button", class: "link-button", text: "Edit details", on: { click: () => {
        $("upload-dialog").close();
        const opener = findCard(image.id)?.querySelector(".card-button") || null;
        openDetails(state.items.find((item) => item.id === image.id) || image, opener);
      } } }),
    );
    addUploaded(image);
  } catch (err) {
    setRowState(row, "failed");
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
// Toasts and questions

function toast(message, { action = null, duration = 6000 } = {}) {
  const box = $("toasts");
  const node = h("div", { class: "toast" }, h("span", { class: "toast-text", text: message }));
  if (action) {
    node.append(h("button", { type: "button", class: "toast-action", text: action.label, on: { click: action.onClick } }));
  }
  box.append(node);
  if (duration) setTimeout(() => node.remove(), duration);
  return node;
}

/** A modal question; resolves true for `ok`. */
function ask({ title, text, ok, cancel, danger = false }) {
  const dialog = $("ask-dialog");
  if (dialog.open) return Promise.resolve(false);
  $("ask-title").textContent = title;
  $("ask-text").textContent = text;
  $("ask-ok").textContent = ok;
  $("ask-cancel").textContent = cancel;
  $("ask-ok").classList.toggle("danger", danger);
  $("ask-ok").classList.toggle("primary", !danger);
  const returnTo = document.activeElement;
  dialog.returnValue = "";
  dialog.showModal();
  $("ask-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      if (returnTo instanceof HTMLElement && returnTo.isConnected) returnTo.focus();
    }, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Shortcuts: "/" search, "u" upload, Delete, Ctrl/Cmd+A select all, Escape clears the selection,
// Ctrl/Cmd+Z undoes the latest delete. None of them fires while typing or in a dialog.

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

function onKeyDown(event) {
  if (!state.api || $("app-view").hidden) return;
  const details = $("details-dialog");
  if (details.open && !document.querySelector("#ask-dialog[open], #confirm-dialog[open]")) {
    if (!typing(event.target) && !event.altKey && !event.ctrlKey && !event.metaKey) {
      if (event.key === "ArrowLeft") {
        event.preventDefault();
        stepDetails(-1);
      } else if (event.key === "ArrowRight") {
        event.preventDefault();
        stepDetails(1);
      }
    }
    return;
  }
  if (document.querySelector("dialog[open]")) return;
  const mod = event.ctrlKey || event.metaKey;
  if (mod && event.key.toLowerCase() === "z" && !typing(event.target) && batches.size) {
    event.preventDefault();
    undoDeletes([...batches].pop());
    return;
  }
  if (typing(event.target)) {
    if (event.key === "Escape" && event.target.id === "search-input" && event.target.value) return;
    return;
  }
  if (mod && event.key.toLowerCase() === "a") {
    event.preventDefault();
    selectAll();
  } else if (event.key === "/" && !mod) {
    event.preventDefault();
    $("search-input").focus();
    $("search-input").select();
  } else if (event.key.toLowerCase() === "u" && !mod && !event.altKey) {
    event.preventDefault();
    openFilePicker();
  } else if (event.key === "Delete" || (event.key === "Backspace" && event.metaKey)) {
    const li = event.target.closest?.("#grid .card");
    const images = state.selected.size ? selectedImages() : li ? [state.items[Number(li.dataset.index)]].filter(Boolean) : [];
    if (images.length) {
      event.preventDefault();
      requestDelete(images);
    }
  } else if (event.key === "Escape" && state.selected.size) {
    clearSelection();
  }
}

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("signin-form").addEventListener("submit", onSignIn);
  window.addEventListener("popstate", applyViewFromUrl);
  $("signout-button").addEventListener("click", () => signOut());
  document.addEventListener("keydown", onKeyDown);
  if ("scrollRestoration" in window.history) window.history.scrollRestoration = "manual";

  const search = $("search-input");
  const runSearch = debounce(() => {
    const value = search.value.trim().slice(0, MAX_SEARCH);
    if (value === state.search) return;
    state.search = value;
    rememberView();
    reload();
  }, SEARCH_DELAY_MS);
  search.addEventListener("input", runSearch);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch.cancel();
    const value = search.value.trim().slice(0, MAX_SEARCH);
    if (value !== state.search) {
      state.search = value;
      rememberView();
      reload();
    }
  });
  $("sort-select").addEventListener("change", (event) => {
    state.sort = SORTS.includes(event.target.value) ? event.target.value : "newest";
    rememberView({ push: true });
    reload();
  });
  $("missing-alt").addEventListener("click", () => setMissingAlt(!state.missingAlt));
  $("select-all").addEventListener("click", selectAll);
  $("bulk-clear").addEventListener("click", () => {
    clearSelection();
    focusCardAt(state.focusIndex);
  });
  $("bulk-move").addEventListener("click", () => openMoveDialog());
  $("bulk-delete").addEventListener("click", () => requestDelete(selectedImages()));
  $("move-form").addEventListener("submit", onMoveSubmit);
  $("move-cancel").addEventListener("click", () => $("move-dialog").close());
  $("move-dialog").addEventListener("cancel", (event) => {
    if (move.running) event.preventDefault();
  });

  $("new-folder").addEventListener("click", () => openFolderDialog("create"));
  $("rename-folder").addEventListener("click", () => openFolderDialog("rename"));
  $("delete-folder").addEventListener("click", onDeleteFolder);
  $("folder-form").addEventListener("submit", onFolderSubmit);
  $("folder-name").addEventListener("input", updateFolderDialogHint);
  $("folder-dialog").querySelector("[data-close]").addEventListener("click", () => $("folder-dialog").close());

  const ul = $("grid");
  ul.addEventListener("keydown", onGridKeyDown);
  ul.addEventListener("keyup", (event) => {
    if (event.key === " " && event.target.closest(".card")) event.preventDefault();
  });
  ul.addEventListener("click", onGridClick);
  ul.addEventListener("focusin", (event) => {
    const li = event.target.closest(".card");
    if (li) {
      state.focusIndex = Number(li.dataset.index);
      syncTabStops();
    }
  });
  window.addEventListener("scroll", scheduleRender, { passive: true });
  window.addEventListener("resize", () => {
    updateStickyPadding();
    scheduleRender();
  });

  $("upload-button").addEventListener("click", openFilePicker);
  $("upload-add").addEventListener("click", openFilePicker);
  $("upload-retry-all").addEventListener("click", () => retryRows(uploads.withState("failed")));
  $("file-input").addEventListener("change", (event) => {
    const input = event.target;
    addFiles(input.files);
    input.value = ""; // choosing the same file again must fire change again
  });
  $("upload-form").addEventListener("submit", startUploads);
  for (const button of document.querySelectorAll("#upload-dialog [data-close]")) {
    button.addEventListener("click", () => $("upload-dialog").close());
  }
  setUpDragAndDrop();

  const detailsDialog = $("details-dialog");
  $("details-form").addEventListener("submit", onSaveDetails);
  $("details-form").addEventListener("input", () => {
    const dirty = detailsDirty();
    setStatus($("details-status"), dirty ? "Unsaved changes" : "", false);
    $("details-status").classList.toggle("pending", dirty);
  });
  for (const kind of Object.keys(COPIES)) $(`copy-${kind}`).addEventListener("click", () => onCopy(kind));
  $("details-url").addEventListener("focus", (event) => event.target.select());
  $("details-delete").addEventListener("click", () => details.image && requestDelete([details.image]));
  $("details-prev").addEventListener("click", () => stepDetails(-1));
  $("details-next").addEventListener("click", () => stepDetails(1));
  $("details-image").addEventListener("error", onDetailsPreviewError);
  detailsDialog.querySelector("[data-close]").addEventListener("click", requestCloseDetails);
  detailsDialog.addEventListener("cancel", (event) => {
    // Escape: ask first when there are unsaved edits.
    event.preventDefault();
    requestCloseDetails();
  });
  detailsDialog.addEventListener("close", onDetailsClosed);
  $("confirm-dialog").querySelector("form").addEventListener("submit", onConfirmSubmit);

  // Clicking the backdrop of a dialog closes it (the dialog's own box covers its content).
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("click", (event) => {
      if (event.target !== dialog) return;
      const r = dialog.getBoundingClientRect();
      const inside = event.clientX >= r.left && event.clientX <= r.right && event.clientY >= r.top && event.clientY <= r.bottom;
      if (inside) return;
      if (dialog === detailsDialog) requestCloseDetails();
      else if (!(dialog.id === "move-dialog" && move.running)) dialog.close();
    });
  }
  new ResizeObserver(updateStickyPadding).observe($("topbar"));
}

function main() {
  wire();
  const key = savedKey();
  if (key) startApp(key);
  else showSignIn();
}

main();
