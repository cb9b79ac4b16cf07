"""Features: rolling aggregates (pure pandas) and the platform's Feast glue (`store`).

`mlops.features.store` imports Feast lazily, so importing this package stays cheap."""
