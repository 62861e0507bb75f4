// The Groups screen of parley's web app: the groups this device is in, a
// form to make one, and the open group's history, live from the event
// stream, with a form to send to it. A group is sent to as '#NAME' (as
// `parley chat send '#NAME'` does); its messages carry the conversation
// 'grp:ID'.
'use strict';

export class Groups {
  // api(method, path, body) calls the daemon; el builds elements; msgItem
  // renders a message as the chat screen does.
  constructor(api, el, msgItem) {
    this.api = api;
    this.el = el;
    this.msgItem = msgItem;
    this.list = [];       // the groups, as GET /v1/groups gives them
    this.open = null;     // the group shown
    this.msgs = new Map(); // its messages by ID
    const $ = id => document.getElementById(id);
    this.$ = $;
    $('group-create').addEventListener('submit', e => { e.preventDefault(); this.create(); });
    $('group-send').addEventListener('submit', e => { e.preventDefault(); this.send(); });
  }

  // load refreshes the list and the open group's history.
  async load() {
    const $ = this.$;
    $('groups-error').textContent = '';
    try {
      this.list = await this.api('GET', '/v1/groups');
    } catch (err) { $('groups-error').textContent = err.message; return; }
    if (this.open) this.open = this.list.find(g => g.id === this.open.id) || null;
    this.renderList();
    await this.loadHistory();
  }

  renderList() {
    const el = this.el;
    this.$('group-list').replaceChildren(...this.list.map(g => el('li', this.open && this.open.id === g.id ? {'aria-current': 'true'} : {},
      el('strong', {}, '#' + g.name), ' ',
      el('span', {}, g.members.length + ' members'),
      el('div', {class: 'fp'}, g.members.join(', ')),
      el('div', {class: 'row'}, el('button', {onclick: () => this.show(g)}, 'Open')))));
    if (this.list.length === 0) this.$('group-list').replaceChildren(el('li', {}, 'No groups yet: make one above.'));
  }

  // show opens group g.
  show(g) {
    this.open = g;
    this.msgs = new Map();
    this.renderList();
    this.loadHistory();
    this.$('group-text').focus();
  }

  async loadHistory() {
    const $ = this.$, g = this.open;
    $('group-open').hidden = !g;
    if (!g) return;
    $('group-title').textContent = g.name;
    $('group-members-shown').textContent = g.members.join(', ');
    this.render();
    try {
      const h = await this.api('GET', '/v1/chat/history/' + encodeURIComponent('#' + g.name) + '?limit=200');
      if (this.open !== g) return;
      for (const m of h) this.msgs.set(m.id, m);
      this.render();
    } catch (err) { $('group-send-error').textContent = err.message; }
  }

  render() {
    const ms = [...this.msgs.values()].sort((a, b) => a.lamport - b.lamport || a.sent_ms - b.sent_ms);
    const ol = this.$('group-history');
    ol.replaceChildren(...ms.map(this.msgItem));
    ol.scrollTop = 1e9;
  }

  async create() {
    const $ = this.$;
    const name = $('group-name').value.trim().replace(/^#/, '');
    const members = $('group-members').value.split(/[\s,]+/).map(h => h.trim().toLowerCase()).filter(Boolean);
    $('groups-error').textContent = '';
    try {
      const g = await this.api('POST', '/v1/groups', {name, members});
      $('group-name').value = ''; $('group-members').value = '';
      this.open = g;
      this.msgs = new Map();
      await this.load();
    } catch (err) { $('groups-error').textContent = err.message; }
  }

  async send() {
    const $ = this.$, g = this.open, text = $('group-text').value;
    if (!g || !text) return;
    $('group-send-error').textContent = '';
    try {
      await this.api('POST', '/v1/chat/send', {to: '#' + g.name, text});
      $('group-text').value = '';
      if (this.open === g) this.loadHistory();
    } catch (err) { $('group-send-error').textContent = err.message; }
  }

  // onMessage takes a message event: one of the open group joins its
  // history; one of a group not yet listed (a new group someone made with
  // us) refreshes the list.
  onMessage(e, shown) {
    const m = e.message;
    if (!m || !m.conv.startsWith('grp:')) return;
    const id = m.conv.slice(4);
    if (this.open && this.open.id === id) { this.msgs.set(m.id, m); this.render(); return; }
    if (shown && !this.list.some(g => g.id === id)) this.load();
  }
}
