// Render the \( … \) and \[ … \] spans written by pymdownx.arithmatex (generic mode) with the
// vendored KaTeX (docs/javascripts/katex/): no CDN, works offline and from file://.
function renderMath(root) {
  renderMathInElement(root, {
    delimiters: [
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMath(body)); // mkdocs-material: every page load
} else {
  document.addEventListener("DOMContentLoaded", () => renderMath(document.body));
}
