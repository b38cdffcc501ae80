// Starts Swagger UI on /api/v1/openapi.json. A file of its own, not an inline
// script: the server's Content-Security-Policy allows scripts from 'self' only.
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
