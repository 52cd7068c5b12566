-- Rule conditions: whether an event's properties meet a rule's conditions
-- (docs/conditions.md). The language:
--   {}                                        always
--   {"all": [c, ...]}                         every one of c (true when empty)
--   {"any": [c, ...]}                         at least one of c
--   {"path": "a.b", "op": "eq",  "value": v}  the property at a.b equals v
--   {"path": "a.b", "op": "in",  "value": [v, ...]}
--   {"path": "a.b", "op": "gte", "value": n}  numbers with numbers, strings
--   {"path": "a.b", "op": "lte", "value": n}  with strings, nothing else
--   {"path": "a.b", "op": "exists"}           present and not null
-- A missing property meets no comparison, and a shape outside the language
-- (which Rust refuses when a rule is created) meets nothing: a rule written
-- around the crate fails closed, nested deeper than Rust allows (p_depth)
-- included.
CREATE FUNCTION loyalty.conditions_hold(p_conditions jsonb, p_properties jsonb, p_depth integer DEFAULT 1)
RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
DECLARE
    found_value jsonb;
    wanted jsonb := p_conditions -> 'value';
BEGIN
    IF jsonb_typeof(p_conditions) IS DISTINCT FROM 'object' OR p_depth > 64 THEN
        RETURN false;
    ELSIF p_conditions = '{}' THEN
        RETURN true;
    ELSIF p_conditions ? 'all' THEN
        RETURN jsonb_typeof(p_conditions -> 'all') = 'array'
           AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_conditions -> 'all') AS c(item)
                            WHERE NOT loyalty.conditions_hold(c.item, p_properties, p_depth + 1));
    ELSIF p_conditions ? 'any' THEN
        RETURN jsonb_typeof(p_conditions -> 'any') = 'array'
           AND EXISTS (SELECT 1 FROM jsonb_array_elements(p_conditions -> 'any') AS c(item)
                        WHERE loyalty.conditions_hold(c.item, p_properties, p_depth + 1));
    ELSIF jsonb_typeof(p_conditions -> 'path') IS DISTINCT FROM 'string' THEN
        RETURN false;
    END IF;
    found_value := p_properties #> string_to_array(p_conditions ->> 'path', '.');
    IF found_value IS NULL OR found_value = 'null' THEN
        RETURN false;
    END IF;
    CASE p_conditions ->> 'op'
        WHEN 'exists' THEN
            RETURN true;
        WHEN 'eq' THEN
            RETURN found_value = wanted;
        WHEN 'in' THEN
            RETURN jsonb_typeof(wanted) = 'array'
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(wanted) AS w(item) WHERE w.item = found_value);
        WHEN 'gte' THEN
            RETURN jsonb_typeof(found_value) = jsonb_typeof(wanted)
               AND jsonb_typeof(wanted) IN ('number', 'string') AND found_value >= wanted;
        WHEN 'lte' THEN
            RETURN jsonb_typeof(found_value) = jsonb_typeof(wanted)
               AND jsonb_typeof(wanted) IN ('number', 'string') AND found_value <= wanted;
        ELSE
            RETURN false;
    END CASE;
END
$$;
