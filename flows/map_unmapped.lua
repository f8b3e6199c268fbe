-- map_unmapped: map a task over a list while broadcasting other arguments
-- to every run. Plain arrays are mapped element by element; a table that
-- should be passed whole to every run is wrapped in mf.unmapped.
local mf = require "moonflow"

local price = mf.task({ name = "price" }, function(item, config, multiplier)
  mf.sleep(0.001 * item.qty)           -- a little async work per item
  local total = item.qty * config.unit_price[item.sku] * multiplier
  return string.format("%s x%d = %.2f %s", item.sku, item.qty, total, config.currency)
end)

local config = {                       -- one shared table, not mapped
  currency = "EUR",
  unit_price = { apple = 0.5, pear = 0.75, plum = 0.2 },
}

local order = {                        -- mapped: one run per element
  { sku = "apple", qty = 4 },
  { sku = "pear", qty = 2 },
  { sku = "plum", qty = 10 },
}

-- `order` is mapped, `config` is broadcast with mf.unmapped, and a plain
-- number (1.1, a tax multiplier) is the same for every run without wrapping.
local lines = price:map(order, mf.unmapped(config), 1.1)
print(#lines .. " runs: " .. lines[1].name .. " .. " .. lines[#lines].name)
for i, line in ipairs(lines:result()) do   -- results come back in input order
  print(i .. ". " .. line)
end

-- mf.unmapped also works for arrays you do not want mapped: here `weights`
-- has the same length as the list, but every run gets the whole array.
local weigh = mf.task({ name = "weigh" }, function(x, weights)
  local s = 0
  for _, w in ipairs(weights) do s = s + w * x end
  return s
end)
local weighted = weigh:map({ 1, 2, 3 }, mf.unmapped({ 10, 20, 30 })):result()
print("weighted: " .. table.concat(weighted, " "))

-- Forgetting mf.unmapped on a record table is an error raised by map itself.
local ok, err = pcall(price.map, price, order, config, 1.1)
print("without unmapped: " .. tostring(ok) .. ", " .. err.kind)
