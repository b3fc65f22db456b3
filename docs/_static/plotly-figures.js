// Draw every plotly figure of the page from the JSON the notebook stored (see tools/build_docs.py: plotly_html),
// with the plotly.js that the site serves itself.
(function () {
  function draw() {
    document.querySelectorAll("script.plotly-figure-data").forEach(function (s) {
      var div = document.getElementById(s.dataset.for);
      if (!div || div.dataset.drawn) return;
      var fig = JSON.parse(s.textContent);
      var config = Object.assign({responsive: true, displaylogo: false}, fig.config || {});
      window.Plotly.newPlot(div, fig.data || [], fig.layout || {}, config).then(function () {
        div.dataset.drawn = "1";
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
