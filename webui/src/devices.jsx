// Multi-device screens: the device list with linking and revocation, the
// backup download, linking or restoring a fresh node, and the screen of a
// removed device.
import { useState, useEffect, useCallback } from 'preact/hooks';
import { get, post, del, answer, APIError } from './api.js';
import { t, language } from './i18n.js';
import { CopyButton, ErrorLine } from './ui.jsx';

const enc = encodeURIComponent;

function when(iso) {
  return new Date(iso).toLocaleString(language(), { dateStyle: 'medium', timeStyle: 'short' });
}

function useRun() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState('');
  const run = async (fn) => {
    setBusy(true); setError('');
    try { return await fn(); } catch (e) { setError(e); } finally { setBusy(false); }
  };
  return { busy, error, run };
}

const deviceName = (d) => d.name || d.device.slice(0, 8);

// DevicesSection lists the account's devices, links new ones and revokes
// others. It refetches on the node's "devices" events (and after a
// reconnect, which may have missed some).
export function DevicesSection({ onConvEvent }) {
  const [devices, setDevices] = useState(null);
  const [code, setCode] = useState(null);
  const { busy, error, run } = useRun();
  const load = useCallback(() => get('/devices').then(setDevices).catch(() => {}), []);
  useEffect(() => { load(); }, []);
  useEffect(() => onConvEvent && onConvEvent((f) => {
    if (['devices', 'account', 'resync', 'resumed', 'gap'].includes(f.kind)) load();
  }), [onConvEvent]);
  const revoke = (d) => {
    if (!confirm(t('revokeConfirm', { name: deviceName(d) }))) return;
    run(async () => { await del('/devices/' + enc(d.device)); await load(); });
  };
  return (
    <section class="stack section" aria-labelledby="h-devices">
      <h3 id="h-devices">{t('devices')}</h3>
      <p class="muted small">{t('devicesText')}</p>
      {devices && !devices.length && <p class="muted">{t('noDevices')}</p>}
      <ul class="plain devices" aria-labelledby="h-devices">
        {(devices || []).map((d) => (
          <li key={d.device} class={'device row-flex' + (d.revoked ? ' revoked' : '')} data-device={d.device}>
            <div class="grow">
              <strong>{deviceName(d)}</strong>
              {d.self && <span class="tag">{t('thisDevice')}</span>}
              {d.revoked && <span class="tag danger">{t('deviceRevoked')}</span>}
              <div class="muted small">
                <code>{d.device.slice(0, 16)}</code>
                {' · '}{t('deviceAdded', { time: when(d.added) })}
                {!d.self && !d.revoked && (d.online || d.lastSeen) && <>{' · '}{d.online ? t('online') : t('lastSeen', { time: when(d.lastSeen) })}</>}
              </div>
            </div>
            {!d.self && !d.revoked && (
              <button class="danger" disabled={busy} aria-label={t('revokeDevice', { name: deviceName(d) })} onClick={() => revoke(d)}>{t('revoke')}</button>
            )}
          </li>
        ))}
      </ul>
      <button disabled={busy} onClick={() => run(async () => setCode(await post('/devices/link-code')))}>{t('linkDevice')}</button>
      {code && (
        <div class="stack">
          <p class="small">{t('linkText')}</p>
          <label>{t('linkCode')}<input readOnly value={code.link} onFocus={(e) => e.currentTarget.select()} /></label>
          <div class="row-flex"><CopyButton text={code.link} /><span class="muted small">{t('linkExpires', { time: when(code.expires) })}</span></div>
          <img class="qr" src={'/api/v1/invites/qr?link=' + enc(code.link)} alt={t('linkQR')} width="220" height="220" />
        </div>
      )}
      <ErrorLine error={error} />
    </section>
  );
}

// BackupSection downloads the encrypted backup through a blob link.
export function BackupSection() {
  const [note, setNote] = useState('');
  const { busy, error, run } = useRun();
  const download = () => run(async () => {
    setNote('');
    let res;
    try { res = await fetch('/api/v1/backup', { credentials: 'same-origin', cache: 'no-store' }); } catch { throw new APIError(0, 'offline', 'offline'); }
    if (!res.ok) await answer(res);
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = 'glitr-backup.bin';
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    setNote(t('backupSaved', { size: blob.size }));
  });
  return (
    <section class="stack section" aria-labelledby="h-backup">
      <h3 id="h-backup">{t('backup')}</h3>
      <p class="muted small" id="backup-text">{t('backupText')}</p>
      <button disabled={busy} onClick={download} aria-describedby="backup-text">{t('downloadBackup')}</button>
      <p role="status" class="muted small">{note}</p>
      <ErrorLine error={error} />
    </section>
  );
}

// LinkForm makes this fresh node a device of an existing account.
export function LinkForm({ onDone }) {
  const [code, setCode] = useState('');
  const { busy, error, run } = useRun();
  const submit = (e) => {
    e.preventDefault();
    run(async () => { await post('/link', { code: code.trim() }); await onDone(); });
  };
  return (
    <form class="stack" onSubmit={submit} aria-labelledby="h-link">
      <h2 id="h-link">{t('linkExisting')}</h2>
      <p class="muted small">{t('linkExistingText')}</p>
      <label>{t('linkPaste')}<input required value={code} onInput={(e) => setCode(e.currentTarget.value)} placeholder="web+glitr:link/…" autoFocus autocomplete="off" /></label>
      {busy && <p role="status" class="muted small">{t('linking')}</p>}
      <ErrorLine error={error} />
      <button class="primary" type="submit" disabled={busy || !code.trim()}>{t('linkSubmit')}</button>
    </form>
  );
}

function base64(file) {
  return new Promise((res, rej) => {
    const r = new FileReader();
    r.onload = () => res(String(r.result).replace(/^data:[^,]*,/, ''));
    r.onerror = () => rej(r.error);
    r.readAsDataURL(file);
  });
}

// RestoreForm brings an account back on this fresh node from a backup
// file and the recovery words.
export function RestoreForm({ onDone }) {
  const [file, setFile] = useState(null);
  const [words, setWords] = useState('');
  const { busy, error, run } = useRun();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const backup = await base64(file);
      await post('/restore', { words: words.trim().split(/\s+/).join(' '), backup });
      await onDone();
    });
  };
  return (
    <form class="stack" onSubmit={submit} aria-labelledby="h-restore">
      <h2 id="h-restore">{t('restoreBackup')}</h2>
      <p class="muted small">{t('restoreText')}</p>
      <label>{t('backupFile')}<input type="file" required onChange={(e) => setFile(e.currentTarget.files[0] || null)} /></label>
      <label>{t('recoveryWords')}<textarea required rows={4} value={words} onInput={(e) => setWords(e.currentTarget.value)} autocomplete="off" autocapitalize="none" spellcheck={false} /></label>
      <ErrorLine error={error} />
      <button class="primary" type="submit" disabled={busy || !file || !words.trim()}>{t('restoreSubmit')}</button>
    </form>
  );
}

// Revoked is all a removed device shows.
export function Revoked() {
  return (
    <main class="card-page" role="alert" aria-labelledby="h-revoked">
      <h1 id="h-revoked">{t('revokedTitle')}</h1>
      <p>{t('revokedText')}</p>
    </main>
  );
}
