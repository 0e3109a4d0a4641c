// Validates custom resources with the JSON-schema validators that the
// @kubernetes-models npm packages generate from the operators' Go API types.
// stdin: {"root": "<npm prefix>", "items": [{"module": "<pkg>/_schemas/<Name>.js", "object": {...}}]}
// stdout: one entry per item: null (valid) or the first error {path, message}.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const request = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const item of request.items) {
  const file = path.join(request.root, "node_modules", item.module);
  const { validate } = await import(pathToFileURL(file).href);
  if (validate(item.object)) {
    results.push(null);
  } else {
    const e = validate.errors[0];
    const detail = e.params && Object.keys(e.params).length ? " " + JSON.stringify(e.params) : "";
    results.push({ path: e.instancePath || "(root)", message: `${e.keyword}${detail}` });
  }
}
process.stdout.write(JSON.stringify(results));
