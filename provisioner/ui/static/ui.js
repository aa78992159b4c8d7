// Live rows (server-sent events from /ui/events), the filters, and the reinstall dialog. Nothing else.
"use strict";
const table = document.getElementById("machines");
const filters = document.querySelector("form.filters");
const shown = (row) => !filters || [...filters.querySelectorAll("select")].every(
  (s) => !s.value || row.dataset[s.name] === s.value);
if (table) {
  new EventSource("/ui/events").addEventListener("rows", (event) => {
    for (const [id, html] of Object.entries(JSON.parse(event.data))) {
      const old = document.getElementById(id);
      if (html === null) { if (old) old.remove(); continue; }
      const holder = document.createElement("tbody");
      holder.innerHTML = html;
      const row = holder.firstElementChild;
      row.hidden = !shown(row);
      if (old) old.replaceWith(row);
      else if (table.dataset.live === "insert") table.tBodies[0].append(row);
      if (old && table.dataset.live === "replace") refreshSections();
    }
  });
}
// A machine's page: its timeline and reports come again from the server when its row changes.
async function refreshSections() {
  const page = new DOMParser().parseFromString(await (await fetch(location.href)).text(), "text/html");
  document.querySelectorAll("section[data-live]").forEach((s) => s.replaceWith(page.getElementById(s.id)));
}
if (filters) filters.querySelectorAll("select").forEach((s) => s.addEventListener("change", () => filters.submit()));
const button = document.getElementById("reinstall");
if (button) {
  const dialog = document.getElementById("reinstall-dialog");
  const result = document.getElementById("reinstall-result");
  button.addEventListener("click", () => { dialog.returnValue = ""; dialog.showModal(); });   // Esc keeps the last
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "confirm") return;
    const token = document.getElementById("token").value.trim();
    result.textContent = "Asking the admin API…";
    const answer = await fetch(`/machines/${button.dataset.mac}/reinstall`, {method: "POST",
      headers: token ? {Authorization: `Bearer ${token}`} : {}});
    const body = await answer.json().catch(() => ({}));
    result.textContent = answer.ok ? (body.changed ? "Reinstall set: the next PXE boot installs again."
      : "Nothing to change: it was not marked installed.") : `Refused (${answer.status}): ${body.error || ""}`;
    result.dataset.status = answer.status;
  });
}
