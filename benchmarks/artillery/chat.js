'use strict';
// Artillery processor for busy-processor.yml: one chat turn that waits for `done`.
// SOAK_BENCH_SECONDS: how long each virtual user keeps asking, from its first turn.

const seconds = Number(process.env.SOAK_BENCH_SECONDS || '10');
let deadline = 0;

function running(context, next) {
  return next(Date.now() < context.vars.deadline);
}

function turn(context, ee, done) {
  if (!context.vars.deadline) {
    deadline = deadline || Date.now() + seconds * 1000;
    context.vars.deadline = deadline;
  }
  const ws = context.ws;
  const rid = Math.random().toString(16).slice(2, 14);
  let frames = 0;
  const onMessage = (data) => {
    const type = JSON.parse(data).type;
    if (type === 'session_switched') return;
    frames += 1;
    if (type === 'done' || type === 'error') {
      ws.removeListener('message', onMessage);
      ee.emit('counter', 'chat.frames', frames);
      ee.emit('counter', 'chat.replies', 1);
      done();
    }
  };
  ws.on('message', onMessage);
  ws.send(
    JSON.stringify({
      type: 'message',
      content: `Reply to request ${rid}. nonce=abcd1234`,
      request_id: rid,
    }),
  );
}

module.exports = { running, turn };
