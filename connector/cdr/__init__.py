"""Pure CDR logic: identity, mapping to the API object, filters, times, Master.csv rows."""
