/* palyra-ops web console: live fragments and background actions. Plain JS, no build step, no
 * inline script anywhere (the CSP allows only this file). Without it every page still works: forms
 * post and redirect, and a reload shows the new state. */
(function () {
  'use strict';
  var POLL_MS = 2000;

  function toSignIn() {
    location.assign('/ui/login?next=' + encodeURIComponent(location.pathname + location.search));
  }

  /* An element with data-live="URL" is replaced by the fragment at URL every POLL_MS while the tab is
   * visible; the server answers 304 when nothing changed (ETag). */
  function live(el) {
    var url = el.getAttribute('data-live');
    var etag = null;
    function tick() {
      if (document.hidden) { setTimeout(tick, POLL_MS); return; }
      var headers = {};
      if (etag) { headers['If-None-Match'] = etag; }
      fetch(url, {credentials: 'same-origin', cache: 'no-store', headers: headers, redirect: 'follow'})
        .then(function (r) {
          if (r.redirected && r.url.indexOf('/ui/login') !== -1) { toSignIn(); return null; }
          if (r.status !== 200) { return null; }
          etag = r.headers.get('ETag');
          return r.text().then(function (text) {
            el.innerHTML = text;  /* server-rendered, every value escaped by the template */
            el.setAttribute('data-refreshed', String(Date.now()));
          });
        })
        .catch(function () { /* the daemon restarting: try again next tick */ })
        .then(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  function flash(text, ok) {
    var box = document.getElementById('flash');
    if (!box) { return; }
    var p = document.createElement('p');
    p.className = 'flash ' + (ok ? 'ok' : 'error');
    p.textContent = text;
    box.replaceChildren(p);
  }

  /* A form with data-async posts in the background (same fields, CSRF token included) and shows
   * the answer; the page's live fragments then show the change. */
  function asyncForm(form) {
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var button = form.querySelector('button');
      if (button) { button.disabled = true; }
      fetch(form.action, {
        method: 'POST', credentials: 'same-origin', redirect: 'manual',
        headers: {'X-Palyra-Async': '1', 'Content-Type': 'application/x-www-form-urlencoded'},
        body: new URLSearchParams(new FormData(form)).toString()
      }).then(function (r) {
        if (r.type === 'opaqueredirect') { toSignIn(); return; }
        return r.text().then(function (text) {
          if (r.ok) { flash(text, true); return; }
          var doc = new DOMParser().parseFromString(text, 'text/html');
          var msg = doc.querySelector('.error-message');
          flash(msg ? msg.textContent : ('HTTP ' + r.status), false);
        });
      }).catch(function (e) { flash(String(e), false); })
        .then(function () { if (button) { button.disabled = false; } });
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('[data-live]'), live);
    Array.prototype.forEach.call(document.querySelectorAll('form[data-async]'), asyncForm);
  });
}());
