// Run by test_operations.py: mongosh's operation and diagnostic helpers against
// HeliosDB. Prints one JSON line of results.
const name = process.env.HELIOS_TEST_DB;
const d = db.getSiblingDB(name);
d.items.insertMany([{ sku: "a" }, { sku: "b" }, { sku: "c" }]);
d.items.createIndex({ sku: 1 });
const out = {};
out.ownOps = db
  .adminCommand({ currentOp: 1, $ownOps: true, "command.currentOp": 1 })
  .inprog.map((op) => ({ op: op.op, ns: op.ns, appName: op.appName }));
out.killed = db.killOp(987654321).info;
const checked = d.items.validate({ full: true });
out.validate = { valid: checked.valid, nrecords: checked.nrecords, nIndexes: checked.nIndexes };
out.profiling = { was: d.getProfilingStatus().was, set: d.setProfilingLevel(0).ok };
try {
  d.setProfilingLevel(1);
} catch (e) {
  out.profiling.levelOne = e.code;
}
out.dataSize = Number(d.runCommand({ dataSize: `${name}.items` }).numObjects);
d.dropDatabase();
print(JSON.stringify(out));
