"""The agents' shared machinery: the context a stage gets, middleware, the tool loop, tools and jail."""
