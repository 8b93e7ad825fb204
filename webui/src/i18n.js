// The message catalogue of the UI. Every user-visible string goes through
// t(); {name} placeholders are filled from the second argument. English is
// built in (it is also the fallback for a missing string); every other
// language is a chunk of its own in lang/, fetched when it is chosen, so a
// user downloads one language, not all of them. The service worker
// precaches the chunks: a language works offline once the app is installed.
const catalogue = {
  en: {
    appName: 'Glitr',
    loading: 'Loading…',
    offline: 'Offline — messages are sent when the connection is back.',
    connecting: 'Connecting to your node…',
    offlineCached: 'Your node is not reachable: showing saved chats. What you write is sent when it is back.',
    unreachable: 'Cannot reach your Glitr node. Is it running? Retrying…',
    loginNeeded: 'Open the login URL that your node printed (glitr run).',
    retry: 'Retry',
    back: 'Back',
    close: 'Close',
    cancel: 'Cancel',
    save: 'Save',
    saved: 'Saved',
    copy: 'Copy',
    copied: 'Copied',
    // onboarding / unlock
    welcomeTitle: 'Welcome to Glitr',
    welcomeText: 'Private chat without servers. Your keys never leave your devices.',
    displayName: 'Display name',
    passphraseOptional: 'Passphrase (optional)',
    passphraseHint: 'Protects your keys on this device. Leave empty for none.',
    passphraseRepeat: 'Repeat passphrase',
    passphraseMismatch: 'The passphrases differ.',
    createAccount: 'Create account',
    recoveryTitle: 'Your recovery words',
    recoveryText: 'Write these 24 words down and keep them safe. They are shown only once and restore your account if you lose this device.',
    recoveryConfirm: 'I have written them down',
    continue: 'Continue',
    unlockTitle: 'Unlock Glitr',
    passphrase: 'Passphrase',
    unlock: 'Unlock',
    // list
    chats: 'Chats',
    search: 'Search chats',
    noChats: 'No chats yet. Invite someone to start.',
    noMatches: 'No chats match.',
    newChat: 'New chat',
    newGroup: 'New group',
    invite: 'Invite',
    contacts: 'Contacts',
    settings: 'Settings',
    unreadCount: '{n} unread',
    you: 'You',
    // conversation
    pickChat: 'Pick a chat from the list, or invite someone.',
    pickChatTitle: 'No chat open',
    startTitle: 'Start your first chat',
    startText: 'Glitr has no servers: you reach people through a one-time invite link. Send one, or accept one that you got.',
    inviteSomeone: 'Invite someone',
    showOriginal: 'Show the original message',
    messages: 'Messages',
    messageInput: 'Message',
    send: 'Send',
    reply: 'Reply',
    replyingTo: 'Replying to {name}',
    edit: 'Edit',
    editing: 'Editing message',
    delete: 'Delete for everyone',
    deleteConfirm: 'Delete this message for everyone?',
    deleted: 'This message was deleted.',
    attachFile: 'Attach a file',
    uploading: 'Sending {name}… {pct}%',
    download: 'Download',
    downloading: 'Downloading… {pct}%',
    openImage: 'Open {name}',
    notDownloaded: 'Tap to download',
    err_file_too_large: 'The file is too large: 256 MiB at most.',
    err_storage_full: 'No room left for attachments on your node.',
    err_no_attachment: 'This message has no attachment.',
    err_not_downloaded: 'The file is not downloaded yet.',
    err_attachment_unavailable: 'Nobody who has the file is online.',
    edited: 'edited',
    react: 'React',
    messageActions: 'Message actions',
    reactWith: 'React with {emoji}',
    removeReaction: 'Remove your {emoji}',
    statusSending: 'Sending',
    statusSent: 'Sent',
    statusDelivered: 'Delivered',
    statusRead: 'Read',
    statusFailed: 'Not sent',
    sendFailed: 'Not sent: {reason}',
    discard: 'Discard',
    today: 'Today',
    yesterday: 'Yesterday',
    unreadDivider: 'Unread messages',
    typing: '{name} is typing…',
    online: 'online',
    lastSeen: 'last seen {time}',
    details: 'Details',
    jumpToLatest: 'Jump to latest',
    jumpToUnread: 'Jump to first unread',
    draft: 'Draft',
    loadingMessage: 'Loading…',
    // invites and contacts
    inviteTitle: 'Invite someone',
    inviteText: 'Send this one-time link (or show the QR code). It expires in a week.',
    createInvite: 'Create invite link',
    inviteLink: 'Invite link',
    inviteQR: 'QR code of the invite link',
    acceptTitle: 'Got an invite?',
    acceptLink: 'Paste an invite link',
    accept: 'Accept',
    cardTitle: 'Contact card',
    cardText: 'Or exchange contact cards: copy yours, paste theirs.',
    yourCard: 'Your contact card',
    theirCard: 'Paste a contact card',
    addContact: 'Add contact',
    contactAdded: 'Added {name}.',
    noContacts: 'No contacts yet.',
    safetyNumber: 'Safety number',
    safetyHint: 'Compare this number with your contact in person or on a call. If it matches, mark them verified.',
    verified: 'Verified',
    markVerified: 'Mark as verified',
    notVerified: 'not verified',
    blocked: 'Blocked',
    blockName: 'Block {name}',
    unblockName: 'Unblock {name}',
    blockConfirm: 'Block {name}? You will not get their messages, typing or online status, and they cannot start new chats with you.',
    blockedNotice: 'You blocked {name}. Neither of you can write here until you unblock them.',
    mute: 'Mute',
    muteText: 'No notifications for this chat',
    mutedChat: 'Muted',
    removeName: 'Remove {name}',
    keyChanged: 'New keys under a known name: compare the safety number before you trust this contact.',
    message: 'Message',
    // groups
    groupTitle: 'Group name',
    members: 'Members',
    pickMembers: 'Choose members',
    create: 'Create',
    admin: 'admin',
    addMember: 'Add member',
    remove: 'Remove',
    leave: 'Leave conversation',
    leaveConfirm: 'Leave this conversation?',
    title: 'Title',
    // settings
    profile: 'Profile',
    avatar: 'Avatar',
    chooseAvatar: 'Choose a picture',
    removeAvatar: 'Remove picture',
    appearance: 'Appearance',
    theme: 'Theme',
    themeSystem: 'System',
    themeLight: 'Light',
    themeDark: 'Dark',
    language: 'Language',
    languageAuto: 'Browser default',
    notifications: 'Notifications',
    notificationsText: 'Notify me of messages that arrive while Glitr is in the background',
    notificationsDenied: 'Blocked by the browser. To turn them on, allow notifications for this page in the browser\'s site settings.',
    notificationsUnsupported: 'This browser cannot show notifications.',
    newMessage: 'New message',
    privacy: 'Privacy',
    showPresence: 'Show online status',
    showPresenceText: 'Contacts see when you are online. When off, nothing is sent.',
    readReceipts: 'Send read receipts',
    readReceiptsText: 'When off, nobody learns that you read their messages (and you do not see theirs).',
    devices: 'Devices',
    thisDevice: 'This device',
    devicesText: 'Every device of your account reads and writes your chats. None is primary: any of them can link or remove the others.',
    deviceAdded: 'added {time}',
    deviceRevoked: 'Revoked',
    revoke: 'Revoke',
    revokeDevice: 'Revoke {name}',
    revokeConfirm: 'Remove {name} from your account? It will read nothing sent from now on.',
    linkDevice: 'Link a new device',
    linkText: 'On the new device, start a fresh Glitr node, choose "Link to an existing account" and paste this code (or scan the QR code). It works once.',
    linkCode: 'Link code',
    linkQR: 'QR code of the link code',
    linkExpires: 'Expires at {time}',
    noDevices: 'No devices.',
    backup: 'Backup',
    backupText: 'The backup holds your account key, profile, contacts and the list of your conversations, not the messages. It is encrypted with your 24 recovery words: without them the file is useless, with them it is your account. Keep both apart.',
    downloadBackup: 'Download backup',
    backupSaved: 'Backup saved ({size} bytes).',
    // onboarding: link or restore
    orExisting: 'Already using Glitr?',
    linkExisting: 'Link to an existing account',
    linkExistingText: 'On a device of your account, open Settings → Devices → Link a new device and paste the code here. This node must be new.',
    linkPaste: 'Paste a link code',
    linkSubmit: 'Link this device',
    linking: 'Linking… this can take a moment while your chats arrive.',
    restoreBackup: 'Restore from a backup',
    restoreText: 'Pick the backup file and type your 24 recovery words. Your contacts and conversations come back; older messages arrive from your contacts when they are online.',
    backupFile: 'Backup file',
    recoveryWords: 'Recovery words (24, separated by spaces)',
    restoreSubmit: 'Restore',
    newAccountInstead: 'Create a new account instead',
    // revoked
    revokedTitle: 'This device was removed',
    revokedText: 'Another device of your account removed this one. It can no longer read or send messages. To use Glitr here again, start a fresh node and link it or restore a backup.',
    logout: 'Log out of this browser',
    account: 'Account',
    // API errors, by the code of the node's answer (errorText in ui.jsx)
    errUnknown: 'Something went wrong: {msg}',
    err_offline: 'Your node does not answer. Is it running?',
    err_bad_request: 'The node could not use this request.',
    err_bad_json: 'The node could not read this request.',
    err_too_large: 'That is too large for the node.',
    err_bad_limit: 'The node refused the page size asked for.',
    err_unauthorized: 'This browser is not logged in to your node. Open the login URL that it printed.',
    err_forbidden: 'That is not allowed.',
    err_forbidden_host: 'The node refuses the address this page was opened at. Open it at 127.0.0.1.',
    err_forbidden_origin: 'The node refuses requests from other pages.',
    err_not_found: 'Not found.',
    err_method_not_allowed: 'The node does not support this action.',
    err_conflict: 'That conflicts with what the node has.',
    err_no_conversation: 'This conversation does not exist (any more).',
    err_no_message: 'This message does not exist (any more).',
    err_not_contact: 'This person is not one of your contacts yet.',
    err_not_admin: 'Only an admin of the group can do that.',
    err_not_member: 'You are not a member of this conversation.',
    err_not_your_message: 'You can only change your own messages.',
    err_message_empty: 'The message is empty.',
    err_message_too_long: 'The message is too long.',
    err_message_deleted: 'This message was deleted.',
    err_bad_emoji: 'A reaction is a single emoji.',
    err_bad_card: 'This is not a valid contact card.',
    err_invite_invalid: 'This is not a valid invite link. Check that you pasted all of it.',
    err_invite_expired: 'This invite link has expired. Ask for a new one.',
    err_invite_used: 'This invite link was already used. Ask for a new one.',
    err_link_invalid: 'This is not a valid link code. Check that you pasted all of it.',
    err_link_expired: 'This link code has expired. Make a new one on your other device.',
    err_link_used: 'This link code was already used. Make a new one on your other device.',
    err_not_fresh: 'This node already has an account: only a new node can be linked or restored.',
    err_contact_key_expired: 'The keys of this contact have expired. Exchange a new invite with them.',
    err_contact_blocked: 'You blocked this contact. Unblock them to write to them.',
    err_account_exists: 'This node already has an account.',
    err_recovery_shown: 'The recovery words were already shown once.',
    err_not_synced: 'Your node has not caught up with your other devices yet. Try again in a moment.',
    err_locked: 'Your account is locked. Unlock it with your passphrase.',
    err_wrong_passphrase: 'Wrong passphrase.',
    err_wrong_recovery_words: 'These recovery words do not open this backup.',
    err_backup_invalid: 'This file is not a Glitr backup, or it is damaged.',
    err_device_revoked: 'This device was removed from your account.',
    err_unavailable: 'This node cannot do that (a relay node has no chats).',
    err_cancelled: 'Your node was busy or shutting down. Try again.',
    err_internal: 'Your node had an internal error; its log says more.',
  },
};

// The languages offered, by their own name. rtl: written right to left
// (the page gets dir="rtl", and the CSS uses logical properties only).
export const languages = { en: 'English', de: 'Deutsch', fr: 'Français', es: 'Español', ar: 'العربية' };
const rtl = new Set(['ar']);
const loaders = {
  de: () => import('./lang/de.js'),
  fr: () => import('./lang/fr.js'),
  es: () => import('./lang/es.js'),
  ar: () => import('./lang/ar.js'),
};

let lang = 'en';

// pick chooses the language for a preference: the one set, else the first
// of the browser's languages that we have, else English.
export function pick(tag) {
  const wants = tag ? [tag] : [...(navigator.languages || []), navigator.language || ''];
  for (const w of wants) {
    const k = (w || '').slice(0, 2).toLowerCase();
    if (k in languages) return k;
  }
  return 'en';
}

// loadCatalogue fetches a language's strings (once).
export async function loadCatalogue(k) {
  if (!catalogue[k] && loaders[k]) catalogue[k] = (await loaders[k]()).default;
  return catalogue[k];
}

// setLanguage switches to the language for a preference ("" follows the
// browser) once its strings are here, and mirrors the page for a
// right-to-left one. It resolves to the language in use.
export async function setLanguage(tag) {
  const want = pick(tag);
  const ok = await loadCatalogue(want).catch(() => null);
  lang = ok ? want : 'en';
  document.documentElement.lang = lang;
  document.documentElement.dir = rtl.has(lang) ? 'rtl' : 'ltr';
  return lang;
}

export function language() { return lang; }

// has tells whether the catalogue has a message id (in English at least).
export function has(key) { return key in catalogue.en; }

export function t(key, args) {
  let s = catalogue[lang]?.[key] ?? catalogue.en[key] ?? key;
  if (args) s = s.replace(/\{(\w+)\}/g, (_, k) => (args[k] ?? ''));
  return s;
}

// keys lists every message id (the e2e test checks every language covers it).
export const keys = Object.keys(catalogue.en);
export const _catalogue = catalogue;
