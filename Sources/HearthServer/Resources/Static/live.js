// Live state on a device page (progressive enhancement): the page works without this file; with it,
// presence, last-seen time and readings update while the page is open, from server-sent events.
(function () {
  "use strict";
  var box = document.getElementById("live-state");
  if (!box || !window.EventSource) { return; }
  var source = new EventSource(box.getAttribute("data-events"));
  source.addEventListener("state", function (event) {
    var state;
    try { state = JSON.parse(event.data); } catch (e) { return; }
    var presence = box.querySelector("[data-live=presence]");
    if (presence) {
      presence.textContent = state.online ? "Online" : "Offline";
      presence.className = "badge " + (state.online ? "online" : "offline");
    }
    var seen = box.querySelector("[data-live=lastSeen]");
    if (seen) { seen.textContent = state.lastSeen; }
    var readings = state.readings || {};
    Object.keys(readings).forEach(function (name) {
      var cell = document.querySelector("[data-field=\"" + name.replace(/[^A-Za-z0-9_]/g, "") + "\"]");
      if (cell) { cell.textContent = readings[name]; }
    });
  });
})();
