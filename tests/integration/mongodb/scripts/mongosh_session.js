// Run by test_node_clients.py: mongosh against HeliosDB. Prints one JSON line of results.
const name = process.env.HELIOS_TEST_DB;
const d = db.getSiblingDB(name);
d.items.insertMany([
  { sku: "a", qty: 5, tags: ["x", "y"], price: NumberDecimal("1.50"), at: new Date(0) },
  { sku: "b", qty: 2, tags: ["y"], big: NumberLong("9007199254740993") },
  { sku: "c", qty: 9, tags: [] },
]);
for (let i = 0; i < 150; i++) d.many.insertOne({ i });
const out = {};
out.version = d.version();
out.dbs = d.adminCommand({ listDatabases: 1 }).databases.map((x) => x.name);
out.collections = d.getCollectionNames();
out.found = d.items.find({ qty: { $gt: 3 } }, { _id: 0, sku: 1 }).sort({ sku: 1 }).toArray();
out.iterated = d.many.find().sort({ i: 1 }).toArray().length;
out.updated = d.items.updateOne({ sku: "b" }, { $inc: { qty: 10 }, $push: { tags: "z" } }).modifiedCount;
out.afterUpdate = d.items.findOne({ sku: "b" }, { _id: 0, qty: 1, tags: 1 });
out.big = d.items.findOne({ sku: "b" }).big.toString();
out.decimal = d.items.findOne({ sku: "a" }).price.toString();
out.agg = d.items.aggregate([
  { $unwind: "$tags" },
  { $group: { _id: "$tags", n: { $sum: 1 } } },
  { $sort: { _id: 1 } },
]).toArray();
out.index = d.items.createIndex({ sku: 1, qty: -1 });
out.indexes = d.items.getIndexes().map((x) => x.name);
out.count = d.items.countDocuments({ tags: "y" });
out.stats = d.items.stats().count;
out.deleted = d.items.deleteMany({ qty: { $lt: 6 } }).deletedCount;
const session = db.getMongo().startSession();
const inTxn = session.getDatabase(name).txn;
session.startTransaction();
inTxn.insertOne({ _id: 1 });
inTxn.insertOne({ _id: 2 });
out.txnInside = inTxn.countDocuments({});
out.txnOutside = d.txn.countDocuments({});
session.commitTransaction();
out.txnCommitted = d.txn.countDocuments({});
session.startTransaction();
inTxn.deleteMany({});
session.abortTransaction();
out.txnAborted = d.txn.countDocuments({});
session.endSession();
out.dropped = d.dropDatabase().ok;
print(JSON.stringify(out));
