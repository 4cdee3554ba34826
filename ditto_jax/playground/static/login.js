// Posts the key once; the server answers with an HttpOnly session cookie, so
// the page's own scripts never hold the key.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login");
  const status = document.getElementById("login-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "Checking…";
    const response = await fetch("/ui/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key: document.getElementById("key").value }),
    });
    if (response.ok) {
      window.location.assign("/");
    } else {
      status.textContent = response.status === 401 ? "Wrong key." : `Sign-in failed (HTTP ${response.status}).`;
    }
  });
});
