// echo.js CONNS MSGS: a TCP echo server and CONNS clients in one Node
// process, each client sending MSGS small messages one at a time and
// waiting for each echo (net module).  Prints "ok <round trips>".
const net = require("net");
const conns = +process.argv[2], msgs = +process.argv[3];
const message = "ping 0123456789\n";
const server = net.createServer((s) => s.on("data", (d) => s.write(d)));
server.listen(0, "127.0.0.1", () => {
  const port = server.address().port;
  let finished = 0, total = 0;
  for (let i = 0; i < conns; i++) {
    const c = net.connect(port, "127.0.0.1");
    let sent = 0, got = "";
    c.on("connect", () => { sent++; c.write(message); });
    c.on("data", (d) => {
      got += d;
      if (got.length < message.length) return;
      got = "";
      total++;
      if (sent < msgs) { sent++; c.write(message); }
      else c.end();
    });
    c.on("close", () => {
      if (++finished === conns) { server.close(); console.log("ok " + total); }
    });
  }
});
