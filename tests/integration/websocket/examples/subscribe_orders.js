// The spec's JavaScript client example, as written, on Node with the `ws` package;
// only the address and key differ (HELIOSDB_WS_URL and HELIOSDB_API_KEY).
const WebSocket = require('ws');
const YOUR_API_KEY = process.env.HELIOSDB_API_KEY;

const ws = new WebSocket(process.env.HELIOSDB_WS_URL, 'heliosdb.v1');

ws.onopen = () => {
  // Authenticate
  ws.send(JSON.stringify({
    type: 'request',
    id: 'auth-1',
    action: 'authenticate',
    data: { token: YOUR_API_KEY }
  }));
};

ws.onmessage = (event) => {
  const message = JSON.parse(event.data);

  if (message.type === 'response' && message.id === 'auth-1') {
    // Authentication successful, subscribe to changes
    ws.send(JSON.stringify({
      type: 'request',
      id: 'sub-1',
      action: 'subscribe',
      data: { table: 'orders', events: ['INSERT'] }
    }));
  }

  if (message.type === 'response' && message.id === 'sub-1') {
    console.log('subscribed:', message.success);  // (added: tells the test when to write)
  }

  if (message.type === 'event') {
    console.log('New order:', JSON.stringify(message.data.row));
  }
};

// Keep connection alive
setInterval(() => {
  ws.send(JSON.stringify({ type: 'request', action: 'ping' }));
}, 30000);
