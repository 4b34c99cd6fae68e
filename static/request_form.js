// Enhancement only: when the purpose changes, move the expiry to that purpose's default
// and limit. Without JavaScript the server checks the date against the policy anyway.
(function () {
  var map = JSON.parse(document.getElementById("expiry-map").textContent);
  var purpose = document.getElementById("id_purpose");
  var expires = document.getElementById("id_expires_on");
  if (!purpose || !expires) { return; }
  purpose.addEventListener("change", function () {
    var bounds = map[purpose.value] || ["", ""];
    if (bounds[0]) { expires.value = bounds[0]; }
    if (bounds[1]) { expires.max = bounds[1]; } else { expires.removeAttribute("max"); }
  });
})();
