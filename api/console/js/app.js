// The console's shell: sign-in, the hash router, and which view draws each page.
import { api, describe, session, showMessage } from "./api.js";
import { renderCompare } from "./compare.js";
import { renderBatches, renderCosts } from "./costs.js";
import { renderEdit } from "./edit.js";
import { renderJobs } from "./jobs.js";
import { renderModels } from "./models.js";

const VIEWS = { models: renderModels, edit: renderEdit, compare: renderCompare, jobs: renderJobs,
  costs: renderCosts, batches: renderBatches };
// What the user chose, carried between views (the model picked, the operation).
const state = { model: null, operation: null };

function signInView(view) {
  document.getElementById("nav").hidden = true;
  view.replaceChildren(document.getElementById("sign-in-template").content.cloneNode(true));
  document.getElementById("api-key").focus();
  document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("api-key");
    session.signIn(input.value.trim());
    input.value = "";
    try {
      await api("/v1/jobs", { query: { limit: 1 } });
      showMessage("");
      if (!location.hash || location.hash === "#") location.hash = "#models"; // routes
      else route();
    } catch (error) {
      session.signOut();
      showMessage(describe(error));
    }
  });
}

// Navigations render one after another, in order: a slow render that finished after a
// later one would otherwise replace the page the user went on to.
let routing = Promise.resolve();
function route() {
  routing = routing.then(render, render);
  return routing;
}

async function render() {
  const view = document.getElementById("view");
  if (!session.key()) { signInView(view); return; }
  document.getElementById("nav").hidden = false;
  const name = (location.hash || "#models").slice(1);
  const draw = VIEWS[name] || renderModels;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === `#${name}`);
  }
  view.dataset.view = name in VIEWS ? name : "models";
  delete view.dataset.ready;
  try {
    await draw(view, state);
    view.dataset.ready = name;
    // After sign-in or a move to another view, focus goes to the view's heading (not the
    // page's body), so keyboard and screen-reader users start where the new content does.
    const heading = view.querySelector("h2");
    if (heading && !view.contains(document.activeElement)) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  } catch (error) {
    showMessage(describe(error));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  showMessage("Signed out.", "info");
  route();
});
window.addEventListener("hashchange", () => { showMessage(""); route(); });
// api() signed out because the key was refused mid-session: back to the sign-in page.
window.addEventListener("editq:signed-out", () => {
  showMessage("The API key was refused (revoked, or its tenant erased): sign in with a valid key.");
  route();
});
route();
