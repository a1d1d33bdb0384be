"""Gates before every promotion: Great Expectations suites on tables and windows, drift, model gates."""
