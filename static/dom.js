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

// The proxy's resized variants (/i/{id}/w{N}.{ext}); never upscaled: at or above the
// original's width a variant is the original's size.
export const VARIANT_WIDTHS = [160, 320, 480, 600, 800, 1200, 1600, 2000];
const EXTENSIONS = { "image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp" };

/** Absolute URL of the variant `width` wide; `emailSafe` turns WebP into JPEG for old mail clients. */
export function variantUrl(image, width, { emailSafe = false } = {}) {
  let ext = EXTENSIONS[image.mime_type] || "jpg";
  if (emailSafe && ext === "webp") ext = "jpg";
  return `${image.url}/w${width}.${ext}`;
}

/** The widths worth offering for an image, each with the width the variant really has. */
export function variantWidths(image, maxWidth = 2000) {
  const own = Number(image.width) || maxWidth;
  const out = [];
  for (const w of VARIANT_WIDTHS) {
    if (w > maxWidth) break;
    if (w < own) out.push([w, w]);
    else {
      out.push([w, own]); // the first width at or above the original: the original's size
      break;
    }
  }
  if (out.length === 0) out.push([VARIANT_WIDTHS[0], Math.min(own, VARIANT_WIDTHS[0])]);
  return out;
}

/** A srcset attribute value; `map` turns each absolute URL into the one to use. */
export function srcsetFor(image, maxWidth, map = (u) => u) {
  return variantWidths(image, maxWidth)
    .map(([w, real]) => `${map(variantUrl(image, w))} ${real}w`)
    .join(", ");
}

function scaled(image, width) {
  const w = Math.max(1, Math.min(width, Number(image.width) || width));
  const hgt = Math.max(1, Math.round((Number(image.height) || w) * (w / (Number(image.width) || w))));
  return [w, hgt];
}

/** An <img> for email: the 1200-pixel variant shown 600 pixels wide (sharp on 2x screens),
 *  or the image's own width when it is narrower; width, height and alt always present. */
export function emailImgTag(image) {
  const [w, hgt] = scaled(image, 600);
  return (
    `<img src="${escapeAttribute(variantUrl(image, 1200, { emailSafe: true }))}"` +
    ` alt="${escapeAttribute(image.alt_text || "")}" width="${w}" height="${hgt}"` +
    ` border="0" style="display:block;max-width:100%;height:auto">`
  );
}

/** Responsive HTML for a web page: srcset over the variants, intrinsic width and height. */
export function webImgTag(image) {
  const [w] = scaled(image, 800);
  return (
    `<img src="${escapeAttribute(variantUrl(image, 800))}"` +
    ` srcset="${escapeAttribute(srcsetFor(image, 2000))}"` +
    ` sizes="(max-width: ${w}px) 100vw, ${w}px"` +
    ` width="${Number(image.width)}" height="${Number(image.height)}"` +
    ` alt="${escapeAttribute(image.alt_text || "")}" loading="lazy" decoding="async">`
  );
}

/** Markdown image: alt text with its brackets and backslashes escaped. */
export function markdownImage(image) {
  const alt = String(image.alt_text || "").replace(/[\\[\]]/g, (c) => `\\${c}`).replace(/\s+/g, " ");
  return `![${alt}](${String(image.url).replace(/[()\s]/g, encodeURIComponent)})`;
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

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const STEPS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

/** "3 minutes ago", from an ISO time. */
export function timeAgo(iso, now = Date.now()) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return String(iso);
  const seconds = Math.round((then - now) / 1000);
  if (Math.abs(seconds) < 45) return seconds <= 0 ? "a few seconds ago" : "in a few seconds";
  for (const [unit, size] of STEPS) {
    if (Math.abs(seconds) >= size || unit === "second") return RELATIVE.format(Math.round(seconds / size), unit);
  }
  return String(iso);
}

/** The image type a file's first bytes say, as the server decides it; null if none of ours. */
export async function sniffImageType(file) {
  const b = new Uint8Array(await file.slice(0, 12).arrayBuffer());
  const at = (offset, text) => [...text].every((c, i) => b[offset + i] === c.charCodeAt(0));
  if (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "image/jpeg";
  if (b[0] === 0x89 && at(1, "PNG\r\n\x1a\n")) return "image/png";
  if (at(0, "GIF87a") || at(0, "GIF89a")) return "image/gif";
  if (at(0, "RIFF") && at(8, "WEBP")) return "image/webp";
  return null;
}

/** Hex SHA-256 of a file, or null where the browser offers no digest (plain http on a LAN). */
export async function sha256Hex(file) {
  if (!globalThis.crypto?.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((x) => x.toString(16).padStart(2, "0")).join("");
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
