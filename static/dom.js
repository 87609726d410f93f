// Small DOM and formatting helpers. Nothing here ever parses HTML: API data goes in as text.

/**
 * Create an element. `props` sets attributes (class, aria-*, data-*...), except
 * `text` (textContent) and `on` ({event: handler}). Children are nodes or strings.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** A small stroked icon from SVG path data (static strings only, never API data). */
export function icon(paths, size = 16) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", String(size));
  svg.setAttribute("height", String(size));
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

export const ICONS = {
  folder: ["M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2z"],
  images: ["M4 5h16v14H4z", "m4 16 5-5 4 4 3-3 4 4"],
  warning: ["M12 3 2 20h20z", "M12 10v4", "M12 17h.01"],
  check: ["m5 12 5 5 9-10"],
  x: ["M6 6l12 12M18 6 6 18"],
};

/** Escape text for an HTML attribute value in double quotes (for the copied <img> tag). */
export function escapeAttribute(value) {
  return String(value)
    .replaceAll("&", "&amp;")
    .replaceAll('"', "&quot;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll("'", "&#39;");
}

/** An email-ready <img> tag: absolute src, alt, width and height, attributes escaped. */
export function imgTag(image) {
  return (
    `<img src="${escapeAttribute(image.url)}" alt="${escapeAttribute(image.alt_text || "")}"` +
    ` width="${Number(image.width)}" height="${Number(image.height)}">`
  );
}

const SIZE_UNITS = ["bytes", "KB", "MB", "GB"];

/** 48213 -> "47.1 KB" (binary units, as the "10 MB" limit is 10 x 1024 x 1024 bytes). */
export function formatBytes(bytes) {
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} ${value === 1 ? "byte" : "bytes"}`;
  return `${value.toFixed(value < 10 ? 1 : 0)} ${SIZE_UNITS[unit]}`;
}

const NUMBER = new Intl.NumberFormat();
export const formatNumber = (n) => NUMBER.format(n);

const DATE = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A <time> element with a readable local date and the ISO value. */
export function timeElement(iso) {
  const date = new Date(iso);
  const text = Number.isNaN(date.getTime()) ? String(iso) : DATE.format(date);
  return h("time", { datetime: iso, title: iso, text });
}

/** Call `fn` once `wait` ms have passed without another call. */
export function debounce(fn, wait) {
  let timer = 0;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

/** Same-origin path for an absolute /i/ URL, so previews obey the page's img-src 'self'
 *  even when the server is configured with a --public-url on another host. */
export function localImageUrl(absolute) {
  try {
    const url = new URL(absolute, window.location.href);
    return url.pathname + url.search;
  } catch {
    return absolute;
  }
}

/**
 * Copy text to the clipboard. navigator.clipboard exists only in secure contexts
 * (https, localhost); an appliance reached over plain http on a LAN address has none,
 * so fall back to selecting a hidden textarea and execCommand("copy").
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission denied or document not focused: try the old way.
    }
  }
  const area = h("textarea", { class: "clipboard-helper", readonly: true, "aria-hidden": "true" });
  area.value = text;
  const active = document.activeElement;
  (document.querySelector("dialog[open]") || document.body).append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  if (active instanceof HTMLElement) active.focus();
  return ok;
}
