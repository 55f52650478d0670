// An in-memory SQS-compatible server (npm's local-aws-sqs) on 127.0.0.1:PORT, for
// `reprow bench --source sqs`. Faster than moto but less faithful (it reports no receive count
// to the current SDK and counts queue depth differently), so the tests use moto.
//   npm install --prefix /tmp/local-sqs local-aws-sqs
//   NODE_PATH=/tmp/local-sqs/node_modules node tests/support/local_sqs.js 5200
const { createSqsServer } = require("local-aws-sqs");
const port = Number(process.argv[2] || 5200);
createSqsServer({ port, hostname: "127.0.0.1" }).then(() =>
  console.log(`local-aws-sqs on http://127.0.0.1:${port}`)
);
