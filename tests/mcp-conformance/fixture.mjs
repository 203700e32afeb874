// Fixtures for running MCP clients nobody here wrote against a real gateway.
//
//   node fixture.mjs upstream               an upstream whose answers the conformance suite's
//                                           tools expect (text, PNG, WAV, a binary document, a
//                                           failure); prints "upstream: http://127.0.0.1:PORT"
//   node fixture.mjs proxy GATEWAY TOKEN    a reverse proxy to GATEWAY that adds
//                                           "Authorization: Bearer TOKEN"; prints
//                                           "proxy: http://127.0.0.1:PORT"
//
// The suite's server mode sends no credentials, and the gateway refuses every unauthenticated
// request, so the suite talks to the gateway through the proxy, exactly as an agent with a
// token would. The proxy maps its own origin to the gateway's (a same-origin reverse proxy);
// any other Origin passes unchanged, so the gateway's DNS-rebinding check is what is tested.
import http from "node:http";

const [mode, target, token] = process.argv.slice(2);

// A 1×1 PNG and a tiny WAV header: real media types with real bytes.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
  "base64",
);
const WAV = Buffer.from("UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=", "base64");

function upstream(req, res) {
  const send = (status, type, body) => {
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
  };
  switch (new URL(req.url, "http://x").pathname) {
    case "/simple-text":
      return send(200, "text/plain; charset=utf-8", "This is a simple text response for testing.");
    case "/image":
      return send(200, "image/png", PNG);
    case "/audio":
      return send(200, "audio/wav", WAV);
    case "/document":
      return send(200, "application/octet-stream", Buffer.from([0, 1, 2, 3, 255]));
    case "/error":
      return send(500, "text/plain", "This tool intentionally returns an error for testing");
    default:
      return send(404, "application/json", '{"error":"no such fixture"}');
  }
}

function proxy(req, res) {
  const gateway = new URL(target);
  const port = server.address().port;
  const own = [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
  const headers = { ...req.headers, host: gateway.host, authorization: `Bearer ${token}` };
  if (own.includes(headers.origin)) headers.origin = gateway.origin;
  const out = http.request(
    { host: gateway.hostname, port: gateway.port, method: req.method, path: req.url, headers },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  out.on("error", (e) => {
    res.writeHead(502, { "content-type": "text/plain" });
    res.end(`proxy: ${e.message}`);
  });
  req.pipe(out);
}

const handler = { upstream, proxy }[mode];
if (!handler || (mode === "proxy" && !(target && token))) {
  console.error("usage: fixture.mjs upstream | fixture.mjs proxy GATEWAY_URL TOKEN");
  process.exit(2);
}
const server = http.createServer(handler);
server.listen(0, "127.0.0.1", () => {
  console.log(`${mode}: http://127.0.0.1:${server.address().port}`);
});
