"""Reports for people: terminal tables, model selection over a store's runs and the
leaderboard (CSV, Markdown, a static HTML page).

May import: ``core``, ``contract``, ``track``.
"""
