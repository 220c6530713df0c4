// /docs: Swagger UI (from npm's swagger-ui-dist, copied to www/vendor/swagger-ui/ by
// `make`) over /openapi.json; "Try it out" calls this same origin (servers: [{url: "/"}]).
const box = document.getElementById('docs-error');

if (typeof window.SwaggerUIBundle !== 'function') {
  box.textContent = 'Swagger UI is not installed: run "make" (it runs "npm ci" and copies ' +
    'swagger-ui-dist into www/vendor/swagger-ui/). The raw description is at /openapi.json.';
  box.hidden = false;
} else {
  window.ui = window.SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,          // no calls to an outside validator
    displayRequestDuration: true,
    defaultModelsExpandDepth: 1,
    persistAuthorization: false, // an API key entered here is not stored
    tryItOutEnabled: false,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
}
