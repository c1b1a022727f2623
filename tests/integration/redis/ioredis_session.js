// A second ecosystem: ioredis drives a session against HeliosDB; prints "ok" or throws.
// Usage: node ioredis_session.js PORT PASSWORD PREFIX
"use strict";
const assert = require("node:assert/strict");
const Redis = require("ioredis");

async function main() {
  const [port, password, prefix] = process.argv.slice(2);
  const k = (name) => `${prefix}:${name}`;
  const redis = new Redis({ port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  assert.equal(await redis.ping(), "PONG");
  assert.equal(await redis.set(k("a"), "1", "EX", 100), "OK");
  assert.equal(await redis.incrby(k("a"), 41), 42);
  assert.equal(await redis.get(k("a")), "42");
  assert.equal(await redis.hset(k("h"), { f: "v", g: "w" }), 2);
  assert.deepEqual(await redis.hgetall(k("h")), { f: "v", g: "w" });
  assert.equal(await redis.rpush(k("l"), "x", "y"), 2);
  assert.deepEqual(await redis.lrange(k("l"), 0, -1), ["x", "y"]);
  assert.equal(await redis.zadd(k("z"), 1.5, "m", 3, "n"), 2);
  assert.deepEqual(await redis.zrange(k("z"), 0, -1, "WITHSCORES"), ["m", "1.5", "n", "3"]);
  const results = await redis.pipeline().set(k("p"), "v").get(k("p")).exec();
  assert.deepEqual(results, [[null, "OK"], [null, "v"]]);
  const exec = await redis.multi().incr(k("c")).incr(k("c")).exec();
  assert.deepEqual(exec, [[null, 1], [null, 2]]);
  await assert.rejects(redis.hget(k("a"), "f"), /WRONGTYPE/);

  const subscriber = new Redis({ port: Number(port), password });
  const received = new Promise((resolve) => subscriber.on("message", (ch, msg) => resolve([ch, msg])));
  await subscriber.subscribe(k("ch"));
  assert.equal(await redis.publish(k("ch"), "hi"), 1);
  assert.deepEqual(await received, [k("ch"), "hi"]);
  subscriber.disconnect();

  const blocked = new Redis({ port: Number(port), password });
  const popped = blocked.blpop(k("q"), 10);
  await new Promise((resolve) => setTimeout(resolve, 200));
  await redis.lpush(k("q"), "job");
  assert.deepEqual(await popped, [k("q"), "job"]);
  blocked.disconnect();
  redis.disconnect();
  console.log("ok");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
