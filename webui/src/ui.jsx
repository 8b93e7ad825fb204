import { useEffect, useRef } from 'preact/hooks';
import { t, has, language } from './i18n.js';

export function go(path) { location.hash = '#/' + path; }

// nameOf names an account: the user, a contact by the name the user knows
// them by, another member by the display name they published in the
// conversation (their claim: the UI marks them "not verified"), else the
// start of the account key.
export function nameOf(acct, contacts, account, conv) {
  if (account && acct === account.account) return account.name || t('you');
  const c = contacts.find((x) => x.account === acct);
  if (c) return c.name;
  const m = conv?.members?.find((x) => x.account === acct);
  return m?.name || acct.slice(0, 8);
}

// displayTitle: the title, or for an untitled conversation the names of
// the other members.
export function displayTitle(c, contacts, account) {
  if (c.title) return c.title;
  const others = (c.members || []).filter((m) => !m.self);
  if (!others.length) return t('you');
  return others.map((m) => nameOf(m.account, contacts, account, c)).join(', ');
}

// isDirect: a 1:1 chat (nodes before conversation kinds: untitled, two members).
export function isDirect(c) {
  return c.kind ? c.kind === 'direct' : !c.title && (c.members || []).length === 2;
}

// A contact is online while its last sign of life is younger than this.
// The node sends a heartbeat every 30 s and says when a contact goes
// offline; the UI also lets "online" lapse by itself, in case that word
// never comes (the node itself stopped, say).
export const ONLINE_MS = 75000;

// isOnline reads a presence entry {online, lastSeen, at}; at is when this
// browser last heard that the contact is online.
export function isOnline(p, now = Date.now()) {
  return !!p && !!p.online && now - (p.at || 0) < ONLINE_MS;
}

export function presenceText(p, now) {
  if (isOnline(p, now)) return t('online');
  if (p?.lastSeen) return t('lastSeen', { time: clock(p.lastSeen) });
  return '';
}

const graphemes = typeof Intl !== 'undefined' && Intl.Segmenter ? new Intl.Segmenter('en', { granularity: 'grapheme' }) : null;
const pictograph = /^(?:\p{Extended_Pictographic}|\p{Regional_Indicator}|[#*0-9]\uFE0F?\u20E3)/u;

// emojiOnly tells whether a text is one to three emoji and nothing else
// (white space aside): such a message is shown large. A grapheme is one
// emoji however many code points it takes (skin tones, ZWJ families, flags).
export function emojiOnly(text) {
  const s = (text || '').replace(/\s+/g, '');
  if (!s || s.length > 48 || !graphemes) return false;
  let n = 0;
  for (const { segment } of graphemes.segment(s)) {
    if (!pictograph.test(segment) || ++n > 3) return false;
  }
  return true;
}

// Links in message text. Only web and mail links become links: a
// javascript:, data: or any other scheme stays text (it never matches, and
// safeHref checks the parsed URL once more). Text is never parsed as HTML:
// the pieces are text nodes and <a> elements.
const linkRe = /\b(?:https?:\/\/|mailto:|www\.)[^\s<>"]+/gi;

// safeHref: the URL to link to, or null for anything but http(s) and mailto.
export function safeHref(s) {
  try {
    const u = new URL(/^www\./i.test(s) ? 'https://' + s : s);
    return ['http:', 'https:', 'mailto:'].includes(u.protocol) ? u.href : null;
  } catch { return null; }
}

// trimLink leaves the punctuation that ends a sentence out of a link, and
// a closing bracket that has no opening one in the link.
function trimLink(url) {
  for (;;) {
    const c = url[url.length - 1];
    if (/[.,;:!?'*]/.test(c)) { url = url.slice(0, -1); continue; }
    const open = { ')': '(', ']': '[', '}': '{' }[c];
    if (open && url.split(open).length <= url.split(c).length - 1) { url = url.slice(0, -1); continue; }
    return url;
  }
}

// linkify splits a message's text into text and links (opened in a new
// tab, with neither the opener nor a referrer).
export function linkify(text) {
  if (!text || !/(?:https?:\/\/|mailto:|www\.)/i.test(text)) return text;
  const out = [];
  let last = 0;
  for (const m of text.matchAll(linkRe)) {
    const url = trimLink(m[0]);
    const href = url && safeHref(url);
    if (!href) continue;
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(<a key={m.index} href={href} target="_blank" rel="noopener noreferrer">{url}</a>);
    last = m.index + url.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

export function Avatar({ name, src, size }) {
  const n = name || '?';
  let h = 0;
  for (const ch of n) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  const style = size ? `width:${size}px;height:${size}px` : undefined;
  if (src) return <img class="avatar" src={src} alt="" style={style} />;
  return <span class="avatar" aria-hidden="true" style={style} data-c={h % 8}>{[...n.trim()][0]?.toUpperCase() || '?'}</span>;
}

export function shortTime(iso) {
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString(language(), { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString(language(), { month: 'short', day: 'numeric' });
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString(language(), { hour: '2-digit', minute: '2-digit' });
}

export function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const y = new Date(); y.setDate(y.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return t('today');
  if (d.toDateString() === y.toDateString()) return t('yesterday');
  return d.toLocaleDateString(language(), { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

export function CopyButton({ text }) {
  const onClick = async (e) => {
    const b = e.currentTarget;
    try { await navigator.clipboard.writeText(text); b.textContent = t('copied'); } catch { /* clipboard denied: the text is selectable */ }
    setTimeout(() => { b.textContent = t('copy'); }, 1500);
  };
  return <button type="button" onClick={onClick}>{t('copy')}</button>;
}

// errorText is what the user reads for an error: the translation of the
// node's error code, or for a code this UI does not know (a newer node)
// the generic message with the node's English text.
export function errorText(e) {
  if (!e) return '';
  if (typeof e === 'string') return e; // already the user's language
  if (e.code && has('err_' + e.code)) return t('err_' + e.code);
  return t('errUnknown', { msg: e.message || String(e) });
}

// ErrorLine shows an error where it is rendered, which is next to the
// control that failed: announced (role=alert) and scrolled into view.
export function ErrorLine({ error }) {
  const ref = useRef(null);
  useEffect(() => { if (error && ref.current) ref.current.scrollIntoView({ block: 'nearest' }); }, [error]);
  return error ? <p class="error" role="alert" ref={ref}>{errorText(error)}</p> : null;
}

export function BackLink() {
  return <a class="icon-btn back" href="#/" aria-label={t('back')}><Icon name="back" /></a>;
}

// Icons are inline SVG strokes (no icon font, no emoji: they look the same
// everywhere and take currentColor).
const paths = {
  compose: 'M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4',
  invite: 'M15 19c0-3-2.5-5-6-5s-6 2-6 5M9 11a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7zM19 8v6M16 11h6',
  contacts: 'M17 19c0-2.8-2.2-4.5-5-4.5S7 16.2 7 19M12 11.5a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7zM3 18c0-2 1.2-3.3 3-3.8M21 18c0-2-1.2-3.3-3-3.8',
  settings: 'M4 7h10M18 7h2M4 17h4M12 17h8M16 5v4M10 15v4',
  info: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM12 11v6M12 7.5v.5',
  reply: 'M10 8 5 12l5 4M5 12h9a5 5 0 0 1 5 5v1',
  react: 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18zM8.5 14.5s1.3 2 3.5 2 3.5-2 3.5-2M9 9.5v.5M15 9.5v.5',
  edit: 'M4 20h4L19 9l-4-4L4 16v4z',
  trash: 'M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13',
  send: 'M4 12 20 4l-6 16-3-7-7-1z',
  back: 'M15 5l-7 7 7 7',
  close: 'M6 6l12 12M18 6 6 18',
  down: 'M6 9l6 6 6-6',
  muted: 'M9 18.5a3 3 0 0 0 6 0M6 16h12l-1.5-2.5V10a4.5 4.5 0 0 0-7.6-3.3M7.5 10v3.5L6 16M4 4l16 16',
};

export function Icon({ name }) {
  return (
    <svg class="icon" viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
      <path d={paths[name]} fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}
