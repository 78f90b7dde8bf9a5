"""Many jobs under one id: a request accepted (`intake`) after every item is checked
(`checks`), recorded (`records`), and expanded into jobs by the worker (`expansion`)."""
