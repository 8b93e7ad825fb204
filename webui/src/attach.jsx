// Attachments: sending a file (picker, drag and drop, paste), with a
// thumbnail made here for images, upload progress and cancel; showing one
// in a message (thumbnail, lightbox, player, download) and downloading it
// from the members who have it. The node does the encryption and the
// transfer (docs/attachments.md); the page talks to its own node only.
import { useEffect, useState } from 'preact/hooks';
import { post, APIError } from './api.js';
import { t } from './i18n.js';

const enc = encodeURIComponent;
const base = (conv, msg) => `/api/v1/conversations/${enc(conv)}/attachments/${enc(msg)}`;
export const MAX_FILE = 256 << 20;
const THUMB_EDGE = 320;

// thumbnail makes a JPEG preview of an image file, or null.
async function thumbnail(file) {
  if (!file.type.startsWith('image/') || file.type === 'image/svg+xml') return null;
  try {
    const bmp = await createImageBitmap(file);
    const scale = Math.min(1, THUMB_EDGE / Math.max(bmp.width, bmp.height));
    const w = Math.max(1, Math.round(bmp.width * scale)), h = Math.max(1, Math.round(bmp.height * scale));
    const canvas = document.createElement('canvas');
    canvas.width = w; canvas.height = h;
    canvas.getContext('2d').drawImage(bmp, 0, 0, w, h);
    const blob = await new Promise((res) => canvas.toBlob(res, 'image/jpeg', 0.75));
    return blob && { blob, w, h, width: bmp.width, height: bmp.height };
  } catch {
    return null;
  }
}

// upload sends file as a message of conv; onProgress gets 0..1. It returns
// { done: Promise<message>, abort }.
export function upload(conv, file, { replyTo, caption, onProgress } = {}) {
  const xhr = new XMLHttpRequest();
  const done = (async () => {
    if (file.size > MAX_FILE) throw new APIError(413, 'file too large', 'file_too_large');
    const th = await thumbnail(file);
    const meta = { name: file.name || 'file', type: file.type || 'application/octet-stream', size: file.size,
      caption: caption || '', replyTo: replyTo || '', clientId: crypto.randomUUID() };
    if (th) Object.assign(meta, { width: th.width, height: th.height, thumbType: 'image/jpeg', thumbWidth: th.w, thumbHeight: th.h });
    const form = new FormData();
    form.append('meta', new Blob([JSON.stringify(meta)], { type: 'application/json' }));
    if (th) form.append('thumb', th.blob, 'thumb.jpg');
    form.append('file', file, meta.name);
    return new Promise((resolve, reject) => {
      xhr.open('POST', `/api/v1/conversations/${enc(conv)}/attachments`);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new APIError(xhr.status, body.error || xhr.statusText, body.code));
      };
      xhr.onerror = () => reject(new APIError(0, 'offline', 'offline'));
      xhr.onabort = () => reject(new APIError(0, 'cancelled', 'cancelled'));
      xhr.send(form);
    });
  })();
  return { done, abort: () => xhr.abort() };
}

// Uploads shows the files being sent, each with its progress and Cancel.
export function Uploads({ items, onCancel }) {
  if (!items.length) return null;
  return (
    <ul class="uploads" aria-live="polite">
      {items.map((u) => (
        <li key={u.id}>
          <span>{u.error ? u.error : t('uploading', { name: u.name, pct: Math.round(u.progress * 100) })}</span>
          <progress max="1" value={u.progress} />
          <button type="button" class="small" onClick={() => onCancel(u)}>{u.error ? t('close') : t('cancel')}</button>
        </li>
      ))}
    </ul>
  );
}

function size(n) {
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + ' MiB';
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + ' KiB';
  return n + ' B';
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

// useDownload fetches the file on demand and follows its progress.
function useDownload(conv, msg, att) {
  const [st, setSt] = useState(att);
  useEffect(() => setSt(att), [att.state, att.have]);
  const start = async () => {
    try { setSt(await post(`${base(conv, msg)}/fetch`.replace('/api/v1', ''))); } catch (e) { setSt({ ...st, state: 'failed', error: e.message }); }
  };
  useEffect(() => {
    if (st.state !== 'fetching') return;
    const timer = setInterval(async () => {
      try {
        const r = await fetch(`${base(conv, msg)}/status`, { credentials: 'same-origin' });
        if (r.ok) setSt(await r.json());
      } catch { /* the node is away: try again */ }
    }, 400);
    return () => clearInterval(timer);
  }, [st.state]);
  return [st, start];
}

// Attachment shows a message's file.
export function Attachment({ conv, msg }) {
  const att = msg.attachment;
  const [st, download] = useDownload(conv, msg.id, att);
  const [open, setOpen] = useState(false);
  const url = `${base(conv, msg.id)}/file`;
  const complete = st.state === 'complete';
  const pct = st.total ? Math.round((100 * st.have) / st.total) : 0;
  const media = att.type.startsWith('image/') || att.type.startsWith('video/');
  const audio = att.type.startsWith('audio/');
  useEffect(() => { if (open && complete) return; if (open && !complete && st.state !== 'fetching') download(); }, [open]);
  const progress = st.state === 'fetching' && <span class="att-meta">{t('downloading', { pct })}</span>;
  if (media && att.thumb) {
    const ratio = att.width && att.height ? `${att.width} / ${att.height}` : '4 / 3';
    return (
      <div class="attachment media">
        <button type="button" class="thumb" style={{ aspectRatio: ratio }} aria-label={t('openImage', { name: att.name })} onClick={() => setOpen(true)}>
          {att.thumbReady ? <img src={`${base(conv, msg.id)}/thumb`} alt={att.name} /> : <span class="placeholder" />}
        </button>
        <div class="att-meta">{att.width ? `${att.width}×${att.height} · ` : ''}{size(att.size)} {progress}</div>
        {open && <Lightbox att={att} url={url} ready={complete} pct={pct} onClose={() => setOpen(false)} />}
      </div>
    );
  }
  if (audio) {
    return (
      <div class="attachment audio">
        {complete ? <audio controls src={url} preload="metadata" /> : <button type="button" onClick={download}>▶ {att.durationMs ? duration(att.durationMs) : size(att.size)}</button>}
        {att.waveform?.length > 0 && (
          <div class="waveform" aria-hidden="true">{att.waveform.map((v, i) => <i key={i} style={{ height: `${Math.max(8, (v / 255) * 100)}%` }} />)}</div>
        )}
        {progress}
      </div>
    );
  }
  return (
    <div class="attachment file">
      <div class="file-name" dir="auto">{att.name}</div>
      <div class="att-meta">{att.type} · {size(att.size)}</div>
      {complete
        ? <a class="button small" href={url + '?download=1'} download={att.name}>{t('download')}</a>
        : <button type="button" class="small" onClick={download} disabled={st.state === 'fetching'}>{st.state === 'fetching' ? t('downloading', { pct }) : t('download')}</button>}
      {st.state === 'failed' && <span class="error small" role="alert">{st.error}</span>}
    </div>
  );
}

function Lightbox({ att, url, ready, pct, onClose }) {
  useEffect(() => {
    const key = (e) => e.key === 'Escape' && onClose();
    window.addEventListener('keydown', key);
    return () => window.removeEventListener('keydown', key);
  }, []);
  return (
    <div class="lightbox" role="dialog" aria-modal="true" aria-label={att.name} onClick={onClose}>
      <button type="button" class="icon-btn close" aria-label={t('close')} onClick={onClose}>✕</button>
      {!ready && <p>{t('downloading', { pct })}</p>}
      {ready && att.type.startsWith('video/') && <video controls autoplay src={url} onClick={(e) => e.stopPropagation()} />}
      {ready && att.type.startsWith('image/') && <img src={url} alt={att.name} onClick={(e) => e.stopPropagation()} />}
    </div>
  );
}
