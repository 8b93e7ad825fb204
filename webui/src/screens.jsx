import { useState, useEffect } from 'preact/hooks';
import { get, post, put, del } from './api.js';
import { t, languages } from './i18n.js';
import { Avatar, BackLink, CopyButton, ErrorLine, go, nameOf, presenceText, isDirect } from './ui.jsx';
import { DevicesSection, BackupSection, LinkForm, RestoreForm } from './devices.jsx';
import * as cache from './cache.js';
import * as drafts from './drafts.js';

const enc = encodeURIComponent;

// useAsync runs an action with a busy flag and keeps its error. An action
// names where it was started (run(fn, where)): errorAt(where) is the error
// only there, so a screen shows it next to the control that failed.
function useAsync() {
  const [busy, setBusy] = useState(false);
  const [state, setState] = useState({ error: null, at: '' });
  const run = async (fn, at = '') => {
    setBusy(true); setState({ error: null, at });
    try { return await fn(); } catch (e) { setState({ error: e, at }); } finally { setBusy(false); }
  };
  const setError = (error, at = '') => setState({ error: error || null, at });
  const errorAt = (at) => (state.at === at ? state.error : null);
  return { busy, error: state.error, setError, run, errorAt };
}

export function Onboarding({ onDone }) {
  const [name, setName] = useState('');
  const [pass, setPass] = useState('');
  const [pass2, setPass2] = useState('');
  const [words, setWords] = useState(null);
  const [ack, setAck] = useState(false);
  const [mode, setMode] = useState('create');
  const { busy, error, setError, run } = useAsync();
  if (mode !== 'create') {
    return (
      <main class="card-page">
        <h1>{t('welcomeTitle')}</h1>
        {mode === 'link' ? <LinkForm onDone={onDone} /> : <RestoreForm onDone={onDone} />}
        <button type="button" class="link-btn" onClick={() => setMode('create')}>{t('newAccountInstead')}</button>
      </main>
    );
  }
  if (words) {
    return (
      <main class="card-page">
        <h1>{t('recoveryTitle')}</h1>
        <p>{t('recoveryText')}</p>
        <ol class="words" aria-label={t('recoveryTitle')}>{words.map((w, i) => <li key={i}>{w}</li>)}</ol>
        <label class="check"><input type="checkbox" checked={ack} onChange={(e) => setAck(e.currentTarget.checked)} /> {t('recoveryConfirm')}</label>
        <button class="primary" disabled={!ack} onClick={() => { setWords(null); onDone(); }}>{t('continue')}</button>
      </main>
    );
  }
  // The repeat field exists only while there is a passphrase: emptying the
  // passphrase empties the repeat too, or a hidden old value would keep
  // the two from matching.
  const onPass = (e) => {
    const v = e.currentTarget.value;
    setPass(v);
    if (!v) setPass2('');
    setError('');
  };
  const submit = (e) => {
    e.preventDefault();
    if (pass && pass !== pass2) { setError(t('passphraseMismatch')); return; }
    run(async () => {
      const r = await post('/account', { name, passphrase: pass });
      setWords(r.recoveryWords || []);
    });
  };
  return (
    <main class="card-page">
      <h1>{t('welcomeTitle')}</h1>
      <p class="muted">{t('welcomeText')}</p>
      <form onSubmit={submit} class="stack">
        <label>{t('displayName')}<input required maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} autoFocus autocomplete="nickname" /></label>
        <label>{t('passphraseOptional')}<input type="password" value={pass} onInput={onPass} autocomplete="new-password" aria-describedby="pass-hint" /></label>
        <p id="pass-hint" class="muted small">{t('passphraseHint')}</p>
        {pass && <label>{t('passphraseRepeat')}<input type="password" value={pass2} onInput={(e) => { setPass2(e.currentTarget.value); setError(''); }} autocomplete="new-password" /></label>}
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !name.trim()}>{t('createAccount')}</button>
      </form>
      <div class="stack existing">
        <h2>{t('orExisting')}</h2>
        <button type="button" onClick={() => setMode('link')}>{t('linkExisting')}</button>
        <button type="button" onClick={() => setMode('restore')}>{t('restoreBackup')}</button>
      </div>
    </main>
  );
}

export function Unlock({ onDone }) {
  const [pass, setPass] = useState('');
  const { busy, error, run } = useAsync();
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      await post('/unlock', { passphrase: pass });
      onDone();
    });
  };
  return (
    <main class="card-page">
      <h1>{t('unlockTitle')}</h1>
      <form onSubmit={submit} class="stack">
        <label>{t('passphrase')}<input type="password" required value={pass} onInput={(e) => setPass(e.currentTarget.value)} autoFocus autocomplete="current-password" /></label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy}>{t('unlock')}</button>
      </form>
    </main>
  );
}

function Page({ title, children }) {
  return (
    <section class="page" aria-label={title}>
      <header class="bar"><BackLink /><h2>{title}</h2></header>
      <div class="page-body">{children}</div>
    </section>
  );
}

// usePermission follows the browser's notification permission: "granted",
// "denied", "default" (never asked) or "unsupported".
function usePermission() {
  const read = () => ('Notification' in window ? Notification.permission : 'unsupported');
  const [state, set] = useState(read);
  useEffect(() => {
    let status;
    const on = () => set(read());
    navigator.permissions?.query({ name: 'notifications' }).then((st) => { status = st; st.addEventListener('change', on); }).catch(() => {});
    addEventListener('focus', on);
    return () => { status?.removeEventListener('change', on); removeEventListener('focus', on); };
  }, []);
  return { state, set };
}

// resizeAvatar turns a picked image into a small square JPEG data URL.
async function resizeAvatar(file) {
  const bmp = await createImageBitmap(file);
  const s = Math.min(bmp.width, bmp.height);
  const c = document.createElement('canvas');
  c.width = c.height = 128;
  c.getContext('2d').drawImage(bmp, (bmp.width - s) / 2, (bmp.height - s) / 2, s, s, 0, 0, 128, 128);
  return c.toDataURL('image/jpeg', 0.85);
}

export function Settings({ account, prefs, setPrefs, reloadAccount, onConvEvent }) {
  const [name, setName] = useState(account?.name || '');
  const [avatar, setAvatar] = useState(account?.avatar || '');
  const [saved, setSaved] = useState('');
  const { busy, run, errorAt } = useAsync();
  const perm = usePermission();
  // Preferences apply at once (the control reflects the click) and roll
  // back if the node refuses them.
  const savePrefs = (patch, at) => run(async () => {
    const before = prefs, next = { ...prefs, ...patch };
    setPrefs(next);
    try {
      await put('/preferences', next);
      setSaved(t('saved'));
    } catch (e) {
      setPrefs(before);
      throw e;
    }
  }, at);
  const saveProfile = (e) => {
    e.preventDefault();
    run(async () => { await put('/profile', { name, avatar }); await reloadAccount(); setSaved(t('saved')); }, 'profile');
  };
  const toggle = (key, label, text, checked = !!prefs[key], onChange = (v) => savePrefs({ [key]: v }, 'privacy'), disabled = false) => (
    <label class="toggle">
      <input type="checkbox" role="switch" checked={checked} disabled={disabled} onChange={(e) => onChange(e.currentTarget.checked)} aria-describedby={key + '-text'} />
      <span><strong>{label}</strong><span id={key + '-text'} class="muted small">{text}</span></span>
    </label>
  );
  // Notifications are on only when the preference is on and the browser
  // grants them; the first enable asks the browser, and a refusal leaves
  // the preference off.
  const setNotifications = async (on) => {
    if (on && perm.state !== 'granted') {
      const answer = await Promise.resolve(Notification.requestPermission()).catch(() => 'denied');
      perm.set(answer);
      if (answer !== 'granted') { savePrefs({ notifications: false }, 'notifications'); return; }
    }
    savePrefs({ notifications: on }, 'notifications');
  };
  const notifText = { denied: t('notificationsDenied'), unsupported: t('notificationsUnsupported') }[perm.state] || t('notificationsText');
  return (
    <Page title={t('settings')}>
      <form class="stack section" onSubmit={saveProfile} aria-labelledby="h-profile">
        <h3 id="h-profile">{t('profile')}</h3>
        <div class="row-flex">
          <Avatar name={name} src={avatar} size={64} />
          <label class="file-btn">{t('chooseAvatar')}<input type="file" accept="image/*" onChange={async (e) => { const f = e.currentTarget.files[0]; if (f) setAvatar(await resizeAvatar(f)); }} /></label>
          {avatar && <button type="button" onClick={() => setAvatar('')}>{t('removeAvatar')}</button>}
        </div>
        <label>{t('displayName')}<input required maxLength={128} value={name} onInput={(e) => setName(e.currentTarget.value)} /></label>
        <button class="primary" type="submit" disabled={busy}>{t('save')}</button>
        <ErrorLine error={errorAt('profile')} />
      </form>
      <div class="stack section">
        <h3>{t('appearance')}</h3>
        <label>{t('theme')}
          <select value={prefs.theme} onChange={(e) => savePrefs({ theme: e.currentTarget.value }, 'appearance')}>
            <option value="system">{t('themeSystem')}</option>
            <option value="light">{t('themeLight')}</option>
            <option value="dark">{t('themeDark')}</option>
          </select>
        </label>
        <label>{t('language')}
          <select value={prefs.language} onChange={(e) => savePrefs({ language: e.currentTarget.value }, 'appearance')}>
            <option value="">{t('languageAuto')}</option>
            {Object.entries(languages).map(([k, v]) => <option key={k} value={k}>{v}</option>)}
          </select>
        </label>
        <ErrorLine error={errorAt('appearance')} />
      </div>
      <div class="stack section">
        <h3>{t('notifications')}</h3>
        {toggle('notifications', t('notifications'), notifText, !!prefs.notifications && perm.state === 'granted', setNotifications,
          perm.state === 'denied' || perm.state === 'unsupported')}
        <ErrorLine error={errorAt('notifications')} />
      </div>
      <div class="stack section">
        <h3>{t('privacy')}</h3>
        {toggle('showPresence', t('showPresence'), t('showPresenceText'))}
        {toggle('readReceipts', t('readReceipts'), t('readReceiptsText'))}
        <ErrorLine error={errorAt('privacy')} />
      </div>
      <DevicesSection onConvEvent={onConvEvent} />
      <BackupSection />
      <div class="stack section">
        <h3>{t('account')}</h3>
        <p class="small muted"><code>{account?.account}</code></p>
        <button onClick={async () => {
          // Nothing of the account stays in this browser: the cached chats
          // and the drafts go with the session.
          await fetch('/logout', { method: 'POST' }).catch(() => {});
          await cache.clear();
          drafts.clearAll();
          location.reload();
        }}>{t('logout')}</button>
      </div>
      <p role="status" class="muted small">{saved}</p>
    </Page>
  );
}

export function Invite({ loadContacts, loadConvs }) {
  const [invite, setInvite] = useState(null);
  const [link, setLink] = useState('');
  const [card, setCard] = useState('');
  const [theirs, setTheirs] = useState('');
  const [note, setNote] = useState('');
  const { busy, run, errorAt } = useAsync();
  useEffect(() => { get('/card').then((r) => setCard(r.card)).catch(() => {}); }, []);
  const accept = (e) => {
    e.preventDefault();
    run(async () => {
      const r = await post('/invites/accept', { link });
      await loadContacts(); await loadConvs();
      go(r.conversation ? 'c/' + r.conversation : 'contacts');
    }, 'accept');
  };
  const addCard = (e) => {
    e.preventDefault();
    run(async () => {
      const c = await post('/contacts', { card: theirs.trim() });
      setTheirs('');
      setNote(t('contactAdded', { name: c.name }));
      await loadContacts();
    }, 'card');
  };
  return (
    <Page title={t('inviteTitle')}>
      <div class="stack section">
        <p>{t('inviteText')}</p>
        <button class="primary" disabled={busy} onClick={() => run(async () => setInvite(await post('/invites', {})), 'create')}>{t('createInvite')}</button>
        <ErrorLine error={errorAt('create')} />
        {invite && (
          <div class="stack">
            <label>{t('inviteLink')}<input readOnly value={invite.link} onFocus={(e) => e.currentTarget.select()} /></label>
            <CopyButton text={invite.link} />
            <img class="qr" src={'/api/v1/invites/qr?link=' + enc(invite.link)} alt={t('inviteQR')} width="220" height="220" />
          </div>
        )}
      </div>
      <form class="stack section" onSubmit={accept}>
        <h3>{t('acceptTitle')}</h3>
        <label>{t('acceptLink')}<input value={link} onInput={(e) => setLink(e.currentTarget.value)} placeholder="glitr:invite/…" /></label>
        <button type="submit" disabled={busy || !link.trim()}>{t('accept')}</button>
        <ErrorLine error={errorAt('accept')} />
      </form>
      <form class="stack section" onSubmit={addCard}>
        <h3>{t('cardTitle')}</h3>
        <p class="muted small">{t('cardText')}</p>
        <label>{t('yourCard')}<textarea readOnly rows={3} value={card} onFocus={(e) => e.currentTarget.select()} /></label>
        <CopyButton text={card} />
        <label>{t('theirCard')}<textarea rows={3} value={theirs} onInput={(e) => setTheirs(e.currentTarget.value)} /></label>
        <button type="submit" disabled={busy || !theirs.trim()}>{t('addContact')}</button>
        <ErrorLine error={errorAt('card')} />
        <p role="status" class="muted small">{note}</p>
      </form>
    </Page>
  );
}

// openDirect opens the 1:1 conversation with a contact, creating it when
// there is none yet.
export async function openDirect(acct, convs, loadConvs) {
  const existing = (convs || []).find((c) => isDirect(c) && c.members.some((m) => m.account === acct));
  if (existing) { go('c/' + existing.id); return; }
  const c = await post('/conversations', { title: '', members: [acct] });
  await loadConvs();
  go('c/' + c.id);
}

function safetyGroups(n) { return (n || '').match(/.{1,5}/g) || []; }

export function Contacts({ contacts, presence, convs, loadConvs, loadContacts }) {
  const { busy, run, errorAt } = useAsync();
  return (
    <Page title={t('contacts')}>
      {!contacts.length && <p class="muted">{t('noContacts')} <a href="#/invite">{t('invite')}</a></p>}
      <ul class="plain contacts">
        {contacts.map((c) => {
          const p = presence[c.account];
          return (
            <li key={c.account} class="contact section">
              <div class="row-flex">
                <Avatar name={c.name} />
                <div class="grow">
                  <strong>{c.name}</strong>
                  {c.verified && <span class="verified"> ✔ {t('verified')}</span>}
                  {c.blocked && <span class="tag danger">{t('blocked')}</span>}
                  {c.keyChanged && <p class="error small" role="alert">{t('keyChanged')}</p>}
                  <div class="muted small">{c.blocked ? '' : presenceText(p)}</div>
                </div>
                <button disabled={busy} onClick={() => run(() => openDirect(c.account, convs, loadConvs), c.account)}>{t('message')}</button>
              </div>
              <SafetyNumber contact={c} run={(fn) => run(fn, c.account)} loadContacts={loadContacts} />
              <ErrorLine error={errorAt(c.account)} />
            </li>
          );
        })}
      </ul>
    </Page>
  );
}

// SafetyNumber shows a contact's safety number and the "verified" mark.
function SafetyNumber({ contact: c, run, loadContacts, open }) {
  return (
    <details open={open}>
      <summary>{t('safetyNumber')}</summary>
      <p class="muted small">{t('safetyHint')}</p>
      <p class="safety" aria-label={t('safetyNumber')}>{safetyGroups(c.safetyNumber).map((g, i) => <span key={i}>{g}</span>)}</p>
      <label class="check"><input type="checkbox" checked={!!c.verified} onChange={(e) => { const v = e.currentTarget.checked; run(async () => { await put(`/contacts/${c.account}/verified`, { verified: v }); await loadContacts(); }); }} /> {t('markVerified')}</label>
    </details>
  );
}

export function NewChat({ contacts, convs, loadConvs, group }) {
  const [picked, setPicked] = useState([]);
  const [title, setTitle] = useState('');
  const { busy, error, run } = useAsync();
  const create = (e) => {
    e.preventDefault();
    run(async () => {
      if (!group && picked.length === 1) return openDirect(picked[0], convs, loadConvs);
      const c = await post('/conversations', { title: title.trim(), members: picked });
      await loadConvs();
      go('c/' + c.id);
    });
  };
  return (
    <Page title={group ? t('newGroup') : t('newChat')}>
      <form class="stack" onSubmit={create}>
        {!group && <a href="#/new/group">{t('newGroup')}</a>}
        {group && <label>{t('groupTitle')}<input value={title} maxLength={128} onInput={(e) => setTitle(e.currentTarget.value)} /></label>}
        <fieldset>
          <legend>{t('pickMembers')}</legend>
          {!contacts.length && <p class="muted">{t('noContacts')} <a href="#/invite">{t('invite')}</a></p>}
          {contacts.map((c) => (
            <label key={c.account} class="check">
              <input type={group ? 'checkbox' : 'radio'} name="member" checked={picked.includes(c.account)}
                onChange={(e) => setPicked(group ? (e.currentTarget.checked ? [...picked, c.account] : picked.filter((x) => x !== c.account)) : [c.account])} />
              <Avatar name={c.name} /> {c.name}
            </label>
          ))}
        </fieldset>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy || !picked.length}>{group ? t('create') : t('message')}</button>
      </form>
    </Page>
  );
}

// ConvDetails is the details panel of a conversation: for a 1:1 chat the
// contact (name, verified or not, safety number), mute and block; for a
// group its title, members (add and remove for admins), mute and leave.
export function ConvDetails(props) {
  return isDirect(props.conv) ? <DirectDetails {...props} /> : <GroupDetails {...props} />;
}

function MuteSwitch({ conv, loadConvs, run, busy }) {
  const set = (muted) => run(async () => { await put(`/conversations/${enc(conv.id)}/settings`, { muted }); await loadConvs(); });
  return (
    <label class="toggle">
      <input type="checkbox" role="switch" checked={!!conv.muted} disabled={busy} onChange={(e) => set(e.currentTarget.checked)} aria-describedby={'mute-' + conv.id} />
      <span><strong>{t('mute')}</strong><span id={'mute-' + conv.id} class="muted small">{t('muteText')}</span></span>
    </label>
  );
}

// setBlocked blocks or unblocks a contact (asking first before a block).
export async function setBlocked(acct, name, blocked, loadContacts, loadConvs) {
  if (blocked && !confirm(t('blockConfirm', { name }))) return;
  await put(`/contacts/${enc(acct)}/block`, { blocked });
  await Promise.all([loadContacts(), loadConvs()]);
}

function DirectDetails({ conv, contacts, account, presence, loadConvs, loadContacts, onClose }) {
  const { busy, run, errorAt } = useAsync();
  const other = conv.members.find((m) => !m.self) || conv.members[0];
  const contact = contacts.find((c) => c.account === other.account);
  const name = nameOf(other.account, contacts, account, conv);
  const verified = contact ? contact.verified : other.verified;
  const blocked = conv.blocked ?? contact?.blocked;
  return (
    <div class="details section" role="region" aria-label={t('details')}>
      <div class="row-flex">
        <Avatar name={name} />
        <div class="grow">
          <h3>{name}</h3>
          <div class="small">
            {verified ? <span class="verified">✔ {t('verified')}</span> : <span class="muted">{t('notVerified')}</span>}
            {blocked && <span class="tag danger">{t('blocked')}</span>}
            {!blocked && presenceText(presence[other.account]) && <span class="muted">{' · '}{presenceText(presence[other.account])}</span>}
          </div>
        </div>
      </div>
      {contact && <SafetyNumber contact={contact} run={(fn) => run(fn, 'safety')} loadContacts={loadContacts} />}
      <ErrorLine error={errorAt('safety')} />
      <MuteSwitch conv={conv} loadConvs={loadConvs} run={(fn) => run(fn, 'mute')} busy={busy} />
      <ErrorLine error={errorAt('mute')} />
      <div class="row-flex">
        <button class={blocked ? '' : 'danger'} disabled={busy} onClick={() => run(() => setBlocked(other.account, name, !blocked, loadContacts, loadConvs), 'block')}>
          {blocked ? t('unblockName', { name }) : t('blockName', { name })}
        </button>
        <button onClick={onClose}>{t('close')}</button>
      </div>
      <ErrorLine error={errorAt('block')} />
    </div>
  );
}

function GroupDetails({ conv, contacts, account, loadConvs, onClose }) {
  const [title, setTitle] = useState(conv.title || '');
  const [add, setAdd] = useState('');
  const { busy, run, errorAt } = useAsync();
  const me = conv.members.find((m) => m.self);
  const candidates = contacts.filter((c) => !c.blocked && !conv.members.some((m) => m.account === c.account));
  const path = `/conversations/${enc(conv.id)}`;
  return (
    <div class="details section" role="region" aria-label={t('details')}>
      <form class="row-flex" onSubmit={(e) => { e.preventDefault(); run(async () => { await put(path, { title, avatar: '' }); await loadConvs(); }, 'title'); }}>
        <label class="grow">{t('title')}<input value={title} maxLength={128} onInput={(e) => setTitle(e.currentTarget.value)} /></label>
        <button type="submit" disabled={busy}>{t('save')}</button>
      </form>
      <ErrorLine error={errorAt('title')} />
      <h3>{t('members')}</h3>
      <ul class="plain members">
        {conv.members.map((m) => {
          const name = m.self ? t('you') : nameOf(m.account, contacts, account, conv);
          return (
            <li key={m.account} class="row-flex member">
              <Avatar name={nameOf(m.account, contacts, account, conv)} />
              <span class="grow">
                {name} {m.admin && <span class="muted small">({t('admin')})</span>}
                {!m.self && (m.verified ? <span class="verified small"> ✔ {t('verified')}</span> : !m.contact && <span class="tag">{t('notVerified')}</span>)}
              </span>
              {me?.admin && !m.self && <button disabled={busy} aria-label={t('removeName', { name })} onClick={() => run(async () => { await del(`${path}/members/${m.account}`); await loadConvs(); }, 'members')}>{t('remove')}</button>}
            </li>
          );
        })}
      </ul>
      <ErrorLine error={errorAt('members')} />
      {me?.admin && candidates.length > 0 && (
        <form class="row-flex" onSubmit={(e) => { e.preventDefault(); run(async () => { await post(`${path}/members`, { account: add }); setAdd(''); await loadConvs(); }, 'add'); }}>
          <label class="grow">{t('addMember')}
            <select value={add} onChange={(e) => setAdd(e.currentTarget.value)}>
              <option value="">—</option>
              {candidates.map((c) => <option key={c.account} value={c.account}>{c.name}</option>)}
            </select>
          </label>
          <button type="submit" disabled={busy || !add}>{t('addMember')}</button>
        </form>
      )}
      <ErrorLine error={errorAt('add')} />
      <MuteSwitch conv={conv} loadConvs={loadConvs} run={(fn) => run(fn, 'mute')} busy={busy} />
      <ErrorLine error={errorAt('mute')} />
      <div class="row-flex">
        <button class="danger" disabled={busy} onClick={() => { if (confirm(t('leaveConfirm'))) run(async () => { await post(`${path}/leave`); await loadConvs(); go(''); }, 'leave'); }}>{t('leave')}</button>
        <button onClick={onClose}>{t('close')}</button>
      </div>
      <ErrorLine error={errorAt('leave')} />
    </div>
  );
}
