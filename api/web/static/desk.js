// The enrolment desk: looks up a practitioner (their identity in the RPPS
// directory, which the operator checks against their ID document), creates
// an activation and follows it, lists devices (suspend, resume, revoke) and
// pages the audit trail, through the desk's JSON routes with the session
// cookie and the session's CSRF token. Every text from the server (names,
// sites, device model, app version, audit details) is set with textContent,
// never as HTML.
(function () {
  'use strict';

  var msgs = JSON.parse(document.getElementById('msgs').textContent);
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var lang = document.documentElement.lang || 'fr';
  var auditPage = 10;
  var activationPollMs = 2000;

  var $ = function (id) { return document.getElementById(id); };
  var flash = $('flash');
  var subject = '';
  var lookupSeq = 0; // answers of an older lookup are ignored
  var auditNext = null;
  var activation = null; // {id, deadline, timer, url}

  // ---- helpers ----

  function text(el, s) {
    el.textContent = s == null ? '' : String(s);
    return el;
  }

  function el(tag, cls, content) {
    var e = document.createElement(tag);
    if (cls) {
      e.className = cls;
    }
    if (content != null) {
      text(e, content);
    }
    return e;
  }

  function fmt(key, vars) {
    var s = msgs[key] || key;
    Object.keys(vars || {}).forEach(function (k) {
      s = s.split('{' + k + '}').join(vars[k]);
    });
    return s;
  }

  function when(iso) {
    if (!iso) {
      return msgs.Never;
    }
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(lang, {dateStyle: 'short', timeStyle: 'medium'});
  }

  function say(message, isError) {
    text(flash, message);
    flash.classList.toggle('is-error', !!isError);
    flash.hidden = !message;
  }

  function minSec(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    var r = s % 60;
    return Math.floor(s / 60) + ':' + (r < 10 ? '0' : '') + r;
  }

  // api calls a desk JSON route; a change carries the CSRF token. A lost
  // session sends the operator back to the sign-in page.
  function api(method, path, body) {
    var headers = {'Accept': 'application/json'};
    if (method !== 'GET') {
      headers['X-CSRF-Token'] = csrf;
    }
    var init = {method: method, headers: headers, cache: 'no-store', credentials: 'same-origin'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      if (res.status === 401) {
        say(msgs.SessionGone, true);
        window.setTimeout(function () { window.location.assign('/desk'); }, 1500);
        throw new Error('session');
      }
      var date = Date.parse(res.headers.get('Date') || '');
      if (res.status === 204) {
        return {status: 204, data: null, date: date};
      }
      return res.json().then(function (data) {
        return {status: res.status, data: data, date: date};
      }, function () {
        return {status: res.status, data: null, date: date};
      });
    });
  }

  function failed(r) {
    var code = r && r.data && r.data.error;
    say(msgs['Err_' + code] || fmt('ErrGeneric', {status: r ? r.status : '?'}), true);
  }

  function networkError(err) {
    if (err && err.message === 'session') {
      return;
    }
    say(msgs.ErrNetwork, true);
  }

  // ---- lookup ----

  $('lookup').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var v = $('idnat').value.replace(/\s+/g, '');
    var err = $('idnat-error');
    if (!/^(8\d{11}|0\d{9})$/.test(v)) {
      text(err, msgs.BadIdNat);
      err.hidden = false;
      $('idnat').setAttribute('aria-invalid', 'true');
      $('idnat').focus();
      return;
    }
    err.hidden = true;
    $('idnat').removeAttribute('aria-invalid');
    open(v);
  });

  // open shows a practitioner: their identity in the directory (or why
  // there is none), their devices and audit trail.
  function open(idnat) {
    say('');
    stopActivation();
    $('activation').hidden = true;
    var seq = ++lookupSeq;
    var path = '/api/v1/desk/practitioners/' + encodeURIComponent(idnat);
    Promise.all([api('GET', path + '/devices'), api('GET', path)]).then(function (rs) {
      var r = rs[0];
      var id = rs[1];
      if (seq !== lookupSeq) {
        return;
      }
      if (r.status !== 200) {
        if (r.status === 400) {
          text($('idnat-error'), msgs.BadIdNat);
          $('idnat-error').hidden = false;
          return;
        }
        failed(r);
        return;
      }
      if (id.status !== 200 && id.status !== 404) {
        failed(id);
        return;
      }
      subject = idnat;
      text($('subject'), idnat);
      showIdentity(idnat, id);
      $('practitioner').hidden = false;
      renderDevices(r.data.devices);
      loadAudit(true);
      $('identity-h').focus();
    }).catch(networkError);
  }

  // ---- identity ----

  // showIdentity shows the directory's answer for idnat. An activation is
  // offered after a 200, or after a 404 saying that no directory is loaded
  // (reason no_directory: activations work as without a directory); any
  // other 404 means the idNat is absent from the loaded directory, and an
  // activation would be refused (unknown_user_id).
  function showIdentity(idnat, r) {
    var found = r.status === 200 && !!r.data;
    var noDirectory = !found && !!r.data && r.data.reason === 'no_directory';
    var state = found ? 'found' : (noDirectory ? 'no-directory' : 'absent');
    $('identity').dataset.state = state;
    $('id-found').hidden = !found;
    $('id-no-directory').hidden = !noDirectory;
    $('id-absent').hidden = state !== 'absent';
    $('act-card').hidden = state === 'absent';
    text($('id-absent'), state === 'absent' ? fmt('IdAbsent', {idnat: idnat}) : '');
    if (found) {
      renderIdentity(r.data);
    }
  }

  // label is a {code, label} pair as shown: its label, else its code.
  function label(cl) {
    return (cl && (cl.label || cl.code)) || '';
  }

  function renderIdentity(d) {
    var name = [d.civility, d.given_name, d.family_name].filter(function (s) { return !!s; }).join(' ');
    text($('id-name'), name || msgs.IdNoName);
    text($('id-idnat'), d.idnat);
    text($('id-source'), fmt('IdSource', {version: d.directory_version || '?'}));
    text($('id-profession'), label(d.profession) || msgs.IdUnknown);
    text($('id-category'), label(d.category) || msgs.IdUnknown);

    var specialties = $('id-specialties');
    specialties.replaceChildren();
    (d.specialties || []).forEach(function (sp) {
      specialties.appendChild(el('li', null, label(sp)));
    });
    if (!specialties.children.length) {
      specialties.appendChild(el('li', 'muted', msgs.IdUnknown));
    }

    var list = $('id-activities');
    list.replaceChildren();
    (d.activities || []).forEach(function (a) {
      list.appendChild(activityItem(a));
    });
    $('id-no-activity').hidden = list.children.length > 0;
    list.hidden = list.children.length === 0;
  }

  // activityItem is one place of activity: the site's name, postal code,
  // city and department, the mode (libéral, salarié, bénévole) and sector,
  // and the site's SIRET and FINESS numbers when known.
  function activityItem(a) {
    var site = a.site || {};
    var li = el('li', 'activity');
    li.appendChild(el('p', 'site-name', site.name || msgs.IdNoSiteName));

    var place = [site.postal_code, site.city].filter(function (s) { return !!s; }).join(' ');
    if (place || site.department) {
      var p = el('p', 'site-place');
      if (place) {
        p.appendChild(el('span', 'site-city', place));
      }
      if (site.department) {
        p.appendChild(el('span', 'site-department', msgs.IdDepartment + ' ' + site.department));
      }
      li.appendChild(p);
    }

    if (a.mode || a.sector) {
      var kind = el('p', 'site-kind');
      if (a.mode) {
        kind.appendChild(el('span', 'sr-only', msgs.IdMode + ' '));
        var mode = el('span', 'badge badge-mode', msgs['Mode_' + a.mode.code] || label(a.mode));
        mode.dataset.mode = a.mode.code || '';
        kind.appendChild(mode);
        kind.appendChild(document.createTextNode(' '));
      }
      if (a.sector) {
        kind.appendChild(el('span', 'sr-only', msgs.IdSector + ' '));
        kind.appendChild(el('span', 'site-sector', label(a.sector)));
      }
      li.appendChild(kind);
    }

    var ids = [];
    if (site.siret) {
      ids.push('SIRET ' + site.siret);
    }
    if (site.finess) {
      ids.push('FINESS ' + site.finess);
    }
    if (ids.length) {
      li.appendChild(el('p', 'site-ids', ids.join(' · ')));
    }
    return li;
  }

  // ---- activation ----

  $('create-activation').addEventListener('click', function () {
    if (!subject) {
      return;
    }
    say('');
    var forSubject = subject;
    api('POST', '/api/v1/desk/activations', {subject: forSubject}).then(function (r) {
      if (r.status !== 201) {
        failed(r);
        if (r.data && r.data.error === 'unknown_user_id' && forSubject === subject) {
          // A directory was loaded since the lookup, without this idNat.
          showIdentity(forSubject, {status: 404, data: {reason: 'not_in_directory'}});
        }
        return;
      }
      showActivation(r.data, r.date);
      loadAudit(true);
    }).catch(networkError);
  });

  function b64Blob(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) {
      bytes[i] = bin.charCodeAt(i);
    }
    return new Blob([bytes], {type: 'image/png'});
  }

  function stopActivation() {
    if (activation) {
      window.clearInterval(activation.timer);
      window.clearInterval(activation.ticker);
      URL.revokeObjectURL(activation.url);
      activation = null;
    }
  }

  function showActivation(a, serverNow) {
    stopActivation();
    // The countdown uses the server's clock (Date header), not the PC's.
    var now = isNaN(serverNow) ? Date.now() : serverNow;
    var left = Date.parse(a.expires_at) - now;
    activation = {id: a.activation_id, deadline: performance.now() + left, url: URL.createObjectURL(b64Blob(a.qr_png))};
    var box = $('activation');
    $('act-qr').src = activation.url;
    text($('act-code'), a.code);
    box.hidden = false;
    setActivationStatus('pending');
    activation.ticker = window.setInterval(activationTick, 500);
    activation.timer = window.setInterval(pollActivation, activationPollMs);
    activationTick();
    box.scrollIntoView({block: 'nearest'});
  }

  function activationTick() {
    if (!activation) {
      return;
    }
    var left = activation.deadline - performance.now();
    text($('act-remaining'), minSec(left));
  }

  function setActivationStatus(st, deviceID) {
    var box = $('activation');
    box.dataset.status = st;
    var s = $('act-status');
    s.dataset.status = st;
    text(s, fmt('Act_' + st, {device: deviceID || ''}));
    // Once the activation has ended, its secret is spent or dead: no more QR
    // code, code nor countdown.
    box.querySelectorAll('[data-pending]').forEach(function (e) {
      e.hidden = st !== 'pending';
    });
    if (st !== 'pending') {
      $('act-qr').removeAttribute('src');
      text($('act-code'), '');
    }
  }

  function pollActivation() {
    if (!activation) {
      return;
    }
    var id = activation.id;
    api('GET', '/api/v1/desk/activations/' + encodeURIComponent(id)).then(function (r) {
      if (!activation || activation.id !== id || r.status !== 200) {
        return;
      }
      if (r.data.status !== 'pending') {
        stopActivation();
        setActivationStatus(r.data.status, r.data.device_id);
        reloadDevices();
        loadAudit(true);
      }
    }).catch(networkError);
  }

  // ---- devices ----

  function reloadDevices() {
    if (!subject) {
      return;
    }
    api('GET', '/api/v1/desk/practitioners/' + encodeURIComponent(subject) + '/devices').then(function (r) {
      if (r.status === 200) {
        renderDevices(r.data.devices);
      } else {
        failed(r);
      }
    }).catch(networkError);
  }

  function cell(tr, label, content, cls) {
    var td = el('td', cls, content);
    td.dataset.label = label;
    tr.appendChild(td);
    return td;
  }

  function renderDevices(list) {
    var body = $('devices').querySelector('tbody');
    body.replaceChildren();
    $('devices-empty').hidden = list.length > 0;
    $('devices').hidden = list.length === 0;
    list.forEach(function (d) {
      var tr = el('tr');
      tr.dataset.deviceId = d.device_id;
      var model = cell(tr, msgs.ColModel, null, 'model');
      model.appendChild(el('span', 'model-name', d.model));
      model.appendChild(el('span', 'device-id', d.device_id));
      cell(tr, msgs.ColPlatform, d.platform);
      cell(tr, msgs.ColVersion, d.app_version, 'app-version');
      var st = cell(tr, msgs.ColStatus, null, 'status');
      var badge = el('span', 'badge badge-' + d.status, msgs['Status_' + d.status] || d.status);
      st.dataset.status = d.status;
      st.appendChild(badge);
      cell(tr, msgs.ColCreated, when(d.created_at));
      cell(tr, msgs.ColLastUsed, when(d.last_used_at));
      cell(tr, msgs.ColPush, d.push ? msgs.Yes : msgs.No);
      var actions = cell(tr, msgs.ColActions, null, 'actions');
      if (d.status === 'active') {
        actions.appendChild(actionButton('suspend', msgs.Suspend, fmt('SuspendLabel', {model: d.model}), d));
      }
      if (d.status === 'suspended') {
        actions.appendChild(actionButton('resume', msgs.Resume, fmt('ResumeLabel', {model: d.model}), d));
      }
      if (d.status !== 'revoked') {
        actions.appendChild(actionButton('revoke', msgs.Revoke, fmt('RevokeLabel', {model: d.model}), d));
      }
      body.appendChild(tr);
    });
  }

  function actionButton(action, label, ariaLabel, d) {
    var b = el('button', action === 'revoke' ? 'danger small' : 'small', label);
    b.type = 'button';
    b.dataset.action = action;
    b.setAttribute('aria-label', ariaLabel);
    b.addEventListener('click', function () {
      if (action === 'revoke') {
        confirmRevoke(d, b);
      } else {
        transition(d, action);
      }
    });
    return b;
  }

  function transition(d, action) {
    var method = action === 'revoke' ? 'DELETE' : 'POST';
    var path = '/api/v1/desk/devices/' + encodeURIComponent(d.device_id) + (action === 'revoke' ? '' : '/' + action);
    api(method, path).then(function (r) {
      if (r.status !== 200 && r.status !== 204) {
        failed(r);
        return;
      }
      say(fmt('Done_' + action, {model: d.model}));
      reloadDevices();
      loadAudit(true);
    }).catch(networkError);
  }

  // One confirmation at a time; its answer comes with the dialog's close
  // event. A close event still queued from an earlier dialog arrives while
  // the new one is open: it is not this one's answer.
  var pendingRevoke = null;

  $('confirm').addEventListener('close', function () {
    var dlg = $('confirm');
    if (dlg.open || !pendingRevoke) {
      return;
    }
    var p = pendingRevoke;
    pendingRevoke = null;
    if (dlg.returnValue === 'ok') {
      transition(p.device, 'revoke');
    } else if (document.body.contains(p.opener)) {
      p.opener.focus();
    }
  });

  function confirmRevoke(d, opener) {
    var dlg = $('confirm');
    text($('confirm-text'), fmt('RevokeText', {model: d.model, id: d.device_id}));
    pendingRevoke = {device: d, opener: opener};
    dlg.returnValue = '';
    dlg.showModal();
  }

  // ---- audit ----

  function loadAudit(first) {
    if (!subject) {
      return;
    }
    var path = '/api/v1/desk/audit?subject=' + encodeURIComponent(subject) + '&limit=' + auditPage;
    if (!first && auditNext) {
      path += '&before=' + encodeURIComponent(auditNext);
    }
    var forSubject = subject;
    api('GET', path).then(function (r) {
      if (forSubject !== subject) {
        return;
      }
      if (r.status !== 200) {
        failed(r);
        return;
      }
      renderAudit(r.data.entries, first);
      auditNext = r.data.next;
      $('audit-more').hidden = !auditNext;
    }).catch(networkError);
  }

  function details(d) {
    return Object.keys(d || {}).sort().map(function (k) {
      var v = d[k];
      return k + ': ' + (typeof v === 'object' ? JSON.stringify(v) : v);
    }).join(', ');
  }

  function renderAudit(entries, first) {
    var body = $('audit').querySelector('tbody');
    if (first) {
      body.replaceChildren();
    }
    entries.forEach(function (e) {
      var tr = el('tr');
      tr.dataset.event = e.event;
      tr.dataset.actor = e.actor.type + ':' + e.actor.id;
      cell(tr, msgs.ColTime, when(e.time));
      cell(tr, msgs.ColEvent, msgs['Event_' + e.event] || e.event, 'event');
      cell(tr, msgs.ColActor, (msgs['Actor_' + e.actor.type] || e.actor.type) + ' ' + e.actor.id, 'actor');
      cell(tr, msgs.ColDetails, details(e.details), 'details');
      body.appendChild(tr);
    });
    var empty = body.children.length === 0;
    $('audit-empty').hidden = !empty;
    $('audit').hidden = empty;
  }

  $('audit-more').addEventListener('click', function () {
    loadAudit(false);
  });
}());
