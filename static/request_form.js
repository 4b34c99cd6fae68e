// Enhancement only: when the purpose changes, move the expiry to that purpose's default
// and limit, and redraw the form when production's values come or go. Without JavaScript
// the server checks the date against the policy anyway, and the redraw is a button.
(function () {
  var map = JSON.parse(document.getElementById("expiry-map").textContent);
  var purpose = document.getElementById("id_purpose");
  var expires = document.getElementById("id_expires_on");
  if (!purpose || !expires) { return; }
  // Purposes held to production's values: the server redraws the form with them filled in.
  var heldNode = document.getElementById("held-purposes");
  var held = heldNode ? JSON.parse(heldNode.textContent) : [];
  var redraw = document.getElementById("purpose-changed");
  var shown = purpose.value;
  if (redraw) { redraw.parentNode.hidden = true; }
  purpose.addEventListener("change", function () {
    var bounds = map[purpose.value] || ["", ""];
    if (bounds[0]) { expires.value = bounds[0]; }
    if (bounds[1]) { expires.max = bounds[1]; } else { expires.removeAttribute("max"); }
    if (redraw && (held.indexOf(shown) >= 0 || held.indexOf(purpose.value) >= 0)) {
      redraw.click();
    }
  });
})();
