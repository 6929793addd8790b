"""Browser tools: Chromium driven by Playwright, seen by the model as text snapshots with refs."""
