// Run by test_documents_stage.py: mongosh's db.aggregate() with a leading $documents
// (literal input, no collection). Prints one JSON line of results.
const d = db.getSiblingDB(process.env.HELIOS_TEST_DB);
const out = {};
out.buckets = d
  .aggregate([
    { $documents: [{ x: 10 }, { x: 2 }, { x: 5 }] },
    { $bucketAuto: { groupBy: "$x", buckets: 4 } },
  ])
  .toArray();
out.sorted = d
  .aggregate([{ $documents: [{ x: 3 }, { x: 1 }, { x: 2 }] }, { $sort: { x: 1 } }, { $project: { _id: 0 } }])
  .toArray()
  .map((doc) => doc.x);
try {
  d.items.aggregate([{ $documents: [{ x: 1 }] }]).toArray();
} catch (e) {
  out.onCollection = e.code;
}
print(JSON.stringify(out));
