// DiTFuse: say when a loaded workflow names a model or LoRA that is not installed, before Run (core loaders'
// values are listed by the frontend's missing-models check; DiTFuse models are folders, which it cannot list).
import { app } from "../../scripts/app.js";

const LOADER = "DiTFuseModelLoader";
const CHECKED = ["model", "lora"];

function missingValues(node) {
  const out = [];
  for (const w of node.widgets ?? []) {
    if (!CHECKED.includes(w.name)) continue;
    const values = w.options?.values;
    const list = typeof values === "function" ? values() : values;
    if (Array.isArray(list) && w.value != null && !list.includes(w.value)) out.push([w, w.value]);
  }
  return out;
}

function warn(node) {
  const missing = missingValues(node);
  for (const [w] of missing) w.label = `${w.name} (missing)`;
  if (!missing.length) return;
  const what = missing.map(([w, v]) => `${w.name} "${v}"`).join(" and ");
  const detail = `${what} of node #${node.id} is not installed in models/ditfuse (see the README: "The real ` +
    `weights", or \`ditfuse download\`). Pick an installed one, or the bundled ditfuse-tiny, before Run.`;
  node.ditfuseMissing = detail;
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity: "warn", summary: "DiTFuse model not installed", detail, life: 15000 });
  else console.warn(`DiTFuse: ${detail}`);
}

app.registerExtension({
  name: "DiTFuse.MissingModelWarning",
  loadedGraphNode(node) {
    if (node.comfyClass === LOADER || node.type === LOADER) warn(node);
  },
});
